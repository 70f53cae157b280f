"""Export a trained embedding model to ONNX or LiteRT (TFLite), float32 or quantised, for servers and phones.

    python export.py --model runs/RUN                                   # RUN/export/best.onnx (float32)
    python export.py --model runs/RUN --format litert                   # best.tflite
    python export.py --model runs/RUN --format litert-fp16              # best.fp16.tflite (float16 weights)
    python export.py --model runs/RUN --format litert-int8 --calibration-dir data/lfw_aligned
    python export.py --model runs/RUN --format litert-int8-mixed --calibration-dir data/lfw_aligned
    python export.py --model runs/RUN --format onnx-int8 --calibration-shards data/shards

Formats: onnx (ONNX Runtime, float32), onnx-int8 (static QDQ quantisation), litert (float32), litert-fp16
(float16 weights), litert-int8 (full-integer post-training quantisation: for int8-only accelerators),
litert-int8-mixed (the same with the PReLUs in float32, which XNNPACK, LiteRT's CPU engine on phones and
servers, runs only in float: the fastest on a CPU, docs/using-a-model.md). The int8 formats are calibrated
on aligned faces: the training shards (--calibration-shards) or a folder of aligned crops
(--calibration-dir), --calibration-count of them. Every file takes what the Keras export takes, RGB
[B, H, W, 3] 0..255 as float32 (the scaling inside), and returns the raw embedding [B, D]; a
mixed-precision model is exported from its float32 twin. Its metadata carries the Keras model's
fingerprint, so evaluation reports and galleries made with the Keras model apply to it; run it with
--engine FORMAT in evaluate.py, verify.py, identify.py. After writing, the file is run beside Keras and
the largest difference is printed. export_onnx.py is this command (default --format onnx).
"""

import argparse
import sys

from engines.base import EXPORT_FORMATS as FORMATS


def build_parser(description=__doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run directory (export/best.keras, else export/embedding.keras) or a .keras "
                        "file; default: the newest run under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where to look for the default model (default: runs)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="what to write (default: onnx)")
    parser.add_argument("--output", help="the file (default: beside the .keras: best.onnx, best.int8.onnx, "
                        "best.tflite, best.fp16.tflite, best.int8.tflite, best.int8-mixed.tflite)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    parser.add_argument("--calibration-shards", metavar="SHARDS", help="int8: calibrate on the training TFRecords "
                        "in this folder (its manifest.json)")
    parser.add_argument("--calibration-dir", metavar="ALIGNED", help="int8: calibrate on the aligned crops in this "
                        "folder, <identity>/<crop> as align writes it (the model's input size)")
    parser.add_argument("--calibration-count", type=int, default=300, metavar="N",
                        help="int8: calibration faces (default: 300)")
    return parser


def main(argv=None, parser=None, name="export") -> int:
    args = (parser or build_parser()).parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    from engines.export import export_model

    try:
        result = export_model(args.model, args.format, args.output, args.runs_dir, args.calibration_shards,
                              args.calibration_dir, args.calibration_count, args.opset,
                              log=lambda line: print(line, file=sys.stderr))
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {result.path} ({result.export_format}, {result.bytes / 1e6:.2f} MB): input images [B, H, W, 3] "
          f"float32 RGB 0..255, output the embedding [B, D]; against Keras (float32) on {result.check_images}: max "
          f"|difference| {result.max_difference:.2e}, min cosine {result.min_cosine:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
