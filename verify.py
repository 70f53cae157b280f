"""Are two photos of the same person?

    python verify.py PHOTO_A PHOTO_B                        # the newest run's model (else the starter model)
    python verify.py A.jpg B.jpg --far 1e-3                 # the threshold that accepts 0.1 % of impostors
    python verify.py A.jpg B.jpg --model runs/RUN --threshold 0.3
    python verify.py A.jpg B.jpg --model runs/RUN/export/best.onnx   # ONNX Runtime, no TensorFlow graph

Raw photos of any size: MTCNN and the 5-point alignment of training (the largest face near the
centre), then evaluation's flip-concatenated features. Prints each photo's face quality (the feature
norm: meaningful for MagFace/AdaFace models; --min-quality refuses a photo below it), the cosine similarity and "same person"
when it is above the threshold, and where that threshold came from: the 10-fold threshold of the
model's evaluation report (RUN/eval/*.json, written by evaluate.py), with its false accept rate
there, or --threshold. The work is done by the inference package; this file parses flags.
Exit status: 0 with a decision (same or different), 1 when there is none (the error says why).
"""

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs=2, metavar="PHOTO", help="two photos (JPEG, PNG, BMP, ...; any size)")
    add_model_arguments(parser)
    add_threshold_arguments(parser, "same person when cosine similarity > COSINE")
    add_quality_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def add_model_arguments(parser, default="the newest run under --runs-dir, else the starter model") -> None:
    """--model, --runs-dir, --engine, --fallback, --max-megapixels, --no-progress: shared with identify.py."""
    from engines.base import EXPORT_FORMATS
    from engines.registry import ENGINE_NAMES
    from fileio import add_max_megapixels_argument

    parser.add_argument("--model", help="run directory (export/best.keras, else export/embedding.keras), a .keras, "
                        f"an .onnx or a .tflite file (python export.py), or 'starter' (the shipped model; "
                        f"docs/using-a-model.md); default: {default}")
    parser.add_argument("--runs-dir", default="runs", help="where to look for the default model (default: runs)")
    parser.add_argument("--engine", choices=("auto", *ENGINE_NAMES), default="auto",
                        help="fast: the model with batch norm folded into its convolutions (same results, faster); "
                        f"keras: the model's own graph; {', '.join(EXPORT_FORMATS)}: that export beside the .keras "
                        "(best.onnx, best.int8.tflite, ...; python export.py --format ...), or the export file given "
                        "as --model; "
                        "auto: the engine of an .onnx/.tflite --model, onnx when the .keras has its own ONNX export "
                        "beside it (fastest per photo), else fast (keras for a mixed-precision model)")
    parser.add_argument("--fallback", choices=("none", "center"), default="none",
                        help="a photo without a detected face: none = error naming it (default); center = use a "
                        "centred crop, said in the output")
    add_max_megapixels_argument(parser, per="(align's limit)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_quality_argument(parser) -> None:
    """--min-quality: shared with identify.py search."""
    parser.add_argument("--min-quality", type=float, metavar="Q",
                        help="refuse a photo whose face quality (the L2 norm of its raw embedding, printed for "
                        "every photo) is below Q: a score MagFace and AdaFace models (--loss magface/adaface) "
                        "are trained to give; see docs/heads.md. Default: no minimum")


def add_threshold_arguments(parser, meaning) -> None:
    """--threshold, --far and --eval-report: shared with identify.py."""
    parser.add_argument("--threshold", type=float, metavar="COSINE",
                        help=f"decision threshold as a cosine similarity in [-1, 1] ({meaning}); default: the "
                        "cross-validated, accuracy-optimal threshold of the model's evaluation report in RUN/eval/ "
                        "(the starter model's: starter/report.json)")
    parser.add_argument("--far", type=float, choices=(1e-2, 1e-3, 1e-4), metavar="RATE",
                        help="use the report's threshold for this false accept rate instead: 1e-2, 1e-3 or 1e-4 "
                        "(evaluate.py records each with its TAR). Default: none, the accuracy-optimal threshold, "
                        "which verify.py flags when it accepted more than 1 %% of impostors")
    parser.add_argument("--eval-report", metavar="R.json",
                        help="take the threshold from this evaluate.py report instead of RUN/eval/*.json")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    from engines.loading import load_model
    from inference import verify_photos

    try:
        model = load_model(args.model, args.engine, args.runs_dir)
        result = verify_photos(*args.photos, model=model, threshold=args.threshold, report_path=args.eval_report,
                               fallback=args.fallback, progress=not args.no_progress,
                               min_quality=args.min_quality, max_megapixels=args.max_megapixels, far=args.far)
    except (FileNotFoundError, ValueError) as error:  # PhotoError, ThresholdError: ValueErrors naming the fix
        print(f"verify: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"same": result.same, "cosine": result.cosine, "threshold": result.threshold.cosine,
                          "threshold_source": result.threshold.source,
                          "threshold_report": str(result.threshold.report) if result.threshold.report else None,
                          "far_at_threshold": result.threshold.far, "far_target": result.threshold.far_target,
                          "model": result.model,
                          "quality": [record.quality for record in result.photos],
                          "photos": [vars(record) for record in result.photos]}))
    else:
        print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
