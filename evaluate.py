"""Face verification on LFW (10-fold, flip-concatenated features), insightface .bin sets, or precomputed embeddings.

    python evaluate.py --lfw-pairs pairs.txt                          # newest runs/*/export model, data/lfw_aligned
    python evaluate.py --lfw-pairs pairs.txt --model RUN --lfw-dir ALIGNED
    python evaluate.py --bin agedb_30.bin --center-crop               # insightface set (112x112) with a 112x96 model
    python evaluate.py --lfw-pairs pairs.txt --embeddings E.npz --output R.json
    python evaluate.py --ijb IJB_DIR --target IJBC --model RUN/export/embedding.keras   # IJB-C 1:1 and 1:N
    python evaluate.py --lfw-pairs pairs.txt --protocol sphereface    # as a reference scored it (docs/protocols.md)

The work is done by the evaluation package (shared with training's validation); this file parses flags.
"""

import argparse
import pickle
import sys
from pathlib import Path

from engines.base import EXPORT_FORMATS
from engines.registry import ENGINE_NAMES
from evaluation.embed import FLIP_MODES
from evaluation.images import DEFAULT_LFW_DIR
from evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from fileio.quiet_tensorflow import quiet_tensorflow


def build_parser():
    parser = argparse.ArgumentParser(
        description="Face verification metrics: accuracy mean +- std over 10 folds (each fold's threshold chosen on "
        "the other nine; --protocol facenet: squared L2 distance of L2-normalised features, thresholds "
        "np.arange(0, 4, 0.01), strict <), VAL@FAR (default FAR 1e-3), AUC and EER (pooled exact ROC of all pairs), "
        "the threshold as distance and cosine. Writes a JSON, "
        "a ROC plot and a similarity histogram, and prints a table.",
        epilog="Models load with keras safe_mode=True (no Python lambdas are deserialised). .bin files are pickles "
        "and are read with a restricted unpickler that only admits plain data. To write a .bin: "
        "python -m evaluation.binset --aligned-dir D --pairs P --output lfw.bin",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--lfw-pairs", help="pairs file: LFW View 2 pairs.txt ('10 300' header), View 1 "
                     "pairsDevTrain/DevTest.txt (10 folds made by splitting same and different pairs evenly), "
                     "or a generic list ('# generic pairs', then path_a<TAB>path_b<TAB>1|0)")
    src.add_argument("--lfw-dir", default=str(DEFAULT_LFW_DIR),
                     help="ALIGNED crops <Name>/<Name_0001>.jpg|.png (output of align/align_lfw.py), sized as the model input")
    src.add_argument("--bin", help="evaluate an insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin) instead of pairs")
    src.add_argument("--center-crop", action="store_true",
                     help="with --bin: crop images to the model's width at the centre (112x112 bins -> 112x96: our "
                     "112x96 template is the 112x112 one shifted 8 px, so this is exact)")
    src.add_argument("--embeddings", help="precomputed E.npz with 'paths' (relative to the LFW folder, any extension), "
                     "'embeddings' [N, D] and optional 'embeddings_flip' [N, D]; no model is loaded")
    ijb = parser.add_argument_group("IJB-B / IJB-C template protocols (docs/ijb.md)")
    ijb.add_argument("--ijb", metavar="IJB_DIR", help="evaluate on IJB-B/C: the folder holding meta/ (face_tid_mid, "
                     "name_5pts_score, template_pair_label, 1N gallery/probe csv) and loose_crop/, as distributed")
    ijb.add_argument("--target", choices=("IJBC", "IJBB"), default="IJBC", help="which IJB set IJB_DIR holds")
    ijb.add_argument("--ijb-norm", choices=("keep", "unit"), default="keep",
                     help="keep = N1: image features keep their norm, which weights them in the template "
                     "(insightface's use_norm_score=True); unit = N0: each image feature L2-normalised first")
    ijb.add_argument("--ijb-detector-score", choices=("weight", "ignore"), default="weight",
                     help="weight = D1: image features multiplied by the detector score of the landmark file; "
                     "ignore = D0")
    ijb.add_argument("--ijb-cache", metavar="DIR", help="feature cache (raw embeddings + flips; an interrupted "
                     "run resumes, a rerun with other modes skips the model); default RUN/eval/<target>_features_"
                     "<model fingerprint>_<H>x<W>/")
    ijb.add_argument("--no-1n", action="store_true", help="1:1 only (no 1:N gallery/probe files needed)")
    parser.add_argument("--model", help="exported .keras model, an .onnx/.tflite export of one (python export.py) or a "
                        "run directory (uses export/best.keras, else export/embedding.keras); default: the newest "
                        "under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where to look for the default model")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default=None,
                        help="how the published numbers were computed (docs/protocols.md): facenet (default with "
                        "--lfw-pairs: flip-concatenated features, squared L2 on a 0.01 grid), insightface (default "
                        "with --bin: flips summed, same grid), sphereface (raw flip concatenation, training folds' "
                        "mean subtracted, cosine grid of 20,001, mean of tied best thresholds)")
    parser.add_argument("--flip", choices=FLIP_MODES, default=None,
                        help="features: concat = [emb || emb of the mirror image], sum = emb + emb_flip "
                        "(insightface), concat_raw (sphereface, unnormalised), none; default: the protocol's. With "
                        "--embeddings and no 'embeddings_flip' the default is none. With --ijb: sum = F1 (default: "
                        "raw embedding + that of the mirror), none = F0, concat = [e || e_flip]")
    parser.add_argument("--engine", choices=("auto", *ENGINE_NAMES), default="auto",
                        help="how the model runs: fast = its inference graph with batch norm folded into the "
                        "convolutions (the same function up to float rounding, ~2x faster on a CPU); keras = the "
                        f"model's own graph; {', '.join(EXPORT_FORMATS)} = that export beside "
                        "the .keras (python export.py --format ...), or the .onnx/.tflite given as --model; auto = "
                        "the engine of an export --model, else fast for a float32 model, keras for one whose layers "
                        "compute in float16/bfloat16 (mixed precision), where the fast graph would compute in float32")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (an image and its flip count as two)")
    parser.add_argument("--far", type=float, default=1e-3, help="target false accept rate for VAL@FAR")
    parser.add_argument("--output", help="result JSON (plots go beside it as <stem>_roc.png, <stem>_hist.png); default "
                        "RUN/eval/lfw_<pairs name>.json or RUN/eval/bin_<bin name>.json (beside the model), or "
                        "eval/<npz name>_<pairs name>.json beside E.npz")
    parser.add_argument("--save-embeddings", metavar="E.npz",
                        help="with --lfw-pairs and a model: also save the raw embeddings (and flips) as E.npz, the "
                        "format --embeddings reads")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    # Imported here so --help stays instant.
    from engines.model_file import resolve_model_path, run_dir_of
    from evaluation import report, run

    if args.ijb:
        return _main_ijb(args)
    try:
        if not (0.0 < args.far < 1.0):
            raise ValueError(f"--far must be in (0, 1), got {args.far}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.bin and (args.lfw_pairs or args.embeddings):
            raise ValueError("--bin evaluates a .bin on its own; do not combine it with --lfw-pairs/--embeddings")
        if args.embeddings and args.model:
            raise ValueError("--embeddings evaluates precomputed features; --model is not used with it")
        if args.save_embeddings and (args.bin or args.embeddings):
            raise ValueError("--save-embeddings works with --lfw-pairs and a model (not --bin or --embeddings)")
        if not args.bin and not args.lfw_pairs:
            raise ValueError("give --lfw-pairs PAIRS.txt (e.g. LFW's pairs.txt) or --bin SET.bin")
        protocol = args.protocol or DEFAULT_PROTOCOL["bin" if args.bin else "pairs"]
        if args.embeddings:
            result, emb_a, emb_b, issame = run.evaluate_embeddings(args.lfw_pairs, args.embeddings, args.flip, args.far,
                                                                   protocol)
            npz = Path(args.embeddings)
            default_out = npz.parent / "eval" / f"{npz.stem}_{Path(args.lfw_pairs).stem}.json"
            title = f"{npz.name} on {Path(args.lfw_pairs).name}"
        else:
            model_path = resolve_model_path(args.model, args.runs_dir, exports=True)
            print(f"model: {model_path}", file=sys.stderr)
            engine = None if args.engine == "auto" else args.engine
            if args.bin:
                result, emb_a, emb_b, issame = run.evaluate_model_on_bin(
                    model_path, args.bin, args.flip, args.batch_size, args.far, args.center_crop, not args.no_progress,
                    engine, protocol)
                default_out = run_dir_of(model_path) / "eval" / f"bin_{Path(args.bin).stem}{_engine_tag(result)}.json"
                title = f"{model_path} on {Path(args.bin).name}"
            else:
                result, emb_a, emb_b, issame = run.evaluate_model_on_pairs(
                    model_path, args.lfw_pairs, args.lfw_dir, args.flip, args.batch_size, args.far, not args.no_progress,
                    args.save_embeddings, engine, protocol)
                default_out = run_dir_of(model_path) / "eval" / f"lfw_{Path(args.lfw_pairs).stem}{_engine_tag(result)}.json"
                title = f"{model_path} on {Path(args.lfw_pairs).name}"
    except (FileNotFoundError, ValueError, KeyError, pickle.UnpicklingError) as e:
        # UnpicklingError: a .bin the restricted unpickler refused (its message names the file and why).
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 1

    output = Path(args.output) if args.output else default_out
    report.write_json(result, output)
    written = [output]
    if not args.no_plots:
        written += report.write_plots(result, emb_a, emb_b, issame, output, title)
    print(report.format_report(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _engine_tag(result) -> str:
    """An export's report is named after its engine (lfw_pairs_litert-int8.json): it shares the Keras model's
    fingerprint, and must not replace the float32 model's report, whose threshold verify.py uses."""
    return "" if result.get("engine") in ("fast", "keras") else f"_{result['engine']}"


def _main_ijb(args):
    """--ijb: the IJB-B/C protocols (evaluation.ijb), table + JSON + ROC plot."""
    from evaluation import ijb, ijb_report, report

    try:
        if args.lfw_pairs or args.bin or args.embeddings or args.save_embeddings:
            raise ValueError("--ijb evaluates an IJB set on its own; do not combine it with --lfw-pairs/--bin/"
                             "--embeddings/--save-embeddings")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.model is None:
            from engines.model_file import find_default_model

            args.model = str(find_default_model(args.runs_dir))
        print(f"model: {args.model}", file=sys.stderr)
        result, roc, _ = ijb.evaluate_model_on_ijb(
            args.ijb, args.target, args.model, args.engine, args.flip or "sum", args.ijb_norm,
            args.ijb_detector_score, args.ijb_cache, args.batch_size, not args.no_progress, not args.no_1n)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    output = Path(args.output) if args.output else Path(result["eval_dir"]) / f"{args.target.lower()}_{result['mode']}.json"
    report.write_json(result, output)
    written = [output]
    if not args.no_plots:
        written.append(ijb_report.write_ijb_roc(result, roc, output, f"{Path(args.model).name} on {args.target}"))
    print(ijb_report.format_ijb_report(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
