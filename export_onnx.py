"""Export a trained embedding model to ONNX, for runtimes without TensorFlow (ONNX Runtime, ...).

    python export_onnx.py --model runs/RUN                  # RUN/export/best.keras -> RUN/export/best.onnx
    python export_onnx.py --model M.keras --output M.onnx

train.py already writes export/embedding.onnx beside export/embedding.keras and the SavedModel; this
command exports any other .keras (best.keras, older runs). The ONNX graph takes what the Keras export
takes, RGB float32 [B, H, W, 3] in [0, 255] with the input scaling inside, and returns the raw
embedding [B, D] (output "embedding"); a mixed-precision model is exported as float32. Its metadata
carries the Keras model's fingerprint, so evaluation reports and galleries made with the Keras model
apply to it. After writing, the export is run once with ONNX Runtime beside Keras on random images
and the largest difference is printed.
"""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run directory (export/best.keras, else export/embedding.keras) or a .keras "
                        "file; default: the newest run under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where to look for the default model (default: runs)")
    parser.add_argument("--output", help="the .onnx file (default: beside the .keras, same name)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np

    from engines.keras_engine import make_embed_fn
    from engines.loading import load_model, onnx_path_for
    from engines.model_file import load_embedding_model, resolve_model_path
    from engines.onnx_export import check_opset, export_onnx, float32_twin

    try:
        check_opset(args.opset)   # before the model is loaded
        keras_path = resolve_model_path(args.model, args.runs_dir)
        output = args.output or onnx_path_for(keras_path)
        if str(output) == str(keras_path) or not str(output).endswith(".onnx"):
            raise ValueError(f"--output must be an .onnx file other than the model, got {output}")
        model, image_size = load_embedding_model(keras_path)
        print(f"exporting {keras_path} to {output} ...", file=sys.stderr)
        export_onnx(model, output, source=keras_path, opset=args.opset)
        exported = load_model(output)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"export_onnx: error: {error}", file=sys.stderr)
        return 1
    images = np.random.default_rng(0).uniform(0, 255, (4, *image_size, 3)).astype(np.float32)
    difference = float(np.abs(make_embed_fn(float32_twin(model))(images) - exported.embed_fn(images)).max())
    print(f"wrote {output}: input images [B, {image_size[0]}, {image_size[1]}, 3] float32 RGB 0-255, output "
          f"'embedding' [B, D]; ONNX Runtime vs Keras (float32) on 4 random images: max |difference| {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
