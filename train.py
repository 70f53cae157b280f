#!/usr/bin/env python3
"""Train a face-recognition model with a margin-softmax loss.

    python train.py                                    # built-in synthetic data: a ~1 minute smoke test
    python train.py --data SHARDS --loss am_softmax --m 0.35
    python train.py --data SHARDS --loss arcface --m 0.5 --backbone lresnet50e_ir
    python train.py --data SHARDS --init-from starter --freeze-backbone-steps 200   # fine-tune the starter model
    python train.py --resume --output-dir runs/RUN     # continue a run after a stop or kill -9
    python train.py --data SHARDS --val-bin lfw.bin cfp_fp.bin agedb_30.bin   # insightface .bin sets too

Settings come from the defaults, then --config FILE (YAML or JSON, keys = flag names), then
the flags given here. The resolved configuration is saved as RUN/config.json.
"""

import argparse
import sys


def add_head_flags(group):
    """--loss and one flag per head option (--s, --m, ...), with each head's default, from the head
    registry (losses.registry: Keras-free, so --help stays instant)."""
    from losses.registry import HEADS, OPTION_HELP, all_option_names, option_defaults_text, option_kind

    group.add_argument("--loss", help="the head: " + ", ".join(f"{n} ({spec.summary})" for n, spec in HEADS.items())
                       + "; default am_softmax. Its options below (default: each head's published value; "
                         "docs/heads.md)")
    for name in all_option_names():
        help_text = f"{OPTION_HELP[name]}; default {option_defaults_text(name)}"
        flag = "--" + name.replace("_", "-")
        if option_kind(name) is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:   # ints too: the registry checks and converts (--m 4 for sphereface)
            group.add_argument(flag, type=float, help=help_text)


def build_parser():
    from training.config import REFERENCE_LR_SCHEDULE, SYNTHETIC_DEFAULTS, WEIGHT_DECAY_RULE_NAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    B = argparse.BooleanOptionalAction
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="SHARDS",
                   help="TFRecord folder from `python -m tfrecords.build`. Without it, training runs on "
                        "SYNTHETIC random images with these defaults: "
                        + ", ".join(f"{k}={v}" for k, v in SYNTHETIC_DEFAULTS.items()))
    g.add_argument("--image-size", metavar="HxW", help="default: the manifest's (synthetic data: see --data)")
    g.add_argument("--num-classes", type=int, help="synthetic data only (default 100)")
    g.add_argument("--synthetic-images", type=int, help="synthetic data only: distinct images (default 1024)")
    g.add_argument("--shuffle-buffer", type=int, help="examples in the shuffle buffer (default 20000)")
    g.add_argument("--config", metavar="FILE", help="YAML/JSON file of option values; flags override it")
    g.add_argument("--augment-scale", type=float, metavar="X",
                   help="--data only, like the three below (each adds to the random flip; default 0 = off): "
                        "random zoom in [1-X, 1+X] (a random crop when > 1)")
    g.add_argument("--augment-shift", type=float, metavar="X", help="random shift up to X of the height and width")
    g.add_argument("--augment-rotate", type=float, metavar="DEG", help="random rotation up to DEG degrees")
    g.add_argument("--augment-color", type=float, metavar="X",
                   help="random brightness, contrast and saturation factors in [1-X, 1+X]")

    g = p.add_argument_group("model and loss")
    g.add_argument("--backbone", help="resface20 (default with --data), resface36, lresnet50e_ir, mobilefacenet")
    g.add_argument("--embedding-size", type=int, help="default 512")
    g.add_argument("--backbone-option", action="append", metavar="KEY=VALUE", dest="backbone_options",
                   help="a keyword option of the backbone, repeatable. resface20/resface36: batch_norm=true "
                        "(default in training: the published batch_norm=false collapses, see docs/training.md); "
                        "lresnet50e_ir: dropout=0.4")
    g.add_argument("--dropout", type=float, help="lresnet50e_ir output dropout (default 0.4)")
    add_head_flags(g)
    g.add_argument("--partial-fc", type=float, metavar="RATE",
                   help="Partial FC: each step's softmax over the batch's classes plus random other centres, "
                        "RATE x classes in all (e.g. 0.1 for 10^6+ identities; default: all centres)")
    g.add_argument("--margin-warmup-steps", type=int, metavar="N",
                   help="grow the margin linearly from 0 to its value over the first N steps (default 0 = off): "
                        "am_softmax/cosface train with m x step/N; other heads blend their margin logits with "
                        "s*cos(theta) by that weight")
    g.add_argument("--singletons", choices=("classes", "negatives"),
                   help="identities with one training image in --data (tfrecords.build --min-images 1 keeps "
                        "them): classes (default) trains each as a class; negatives takes their classes out "
                        "of the softmax and trains their images only as negatives, with the entropic open-set "
                        "loss (score every class alike)")
    g.add_argument("--singleton-weight", type=float, metavar="W",
                   help="loss weight of the single-image identities' images, either way (default 1)")
    g.add_argument("--focal", type=float, nargs="?", const=2.0,
                   help="focal loss on top of the head; bare --focal means gamma=2")

    g = p.add_argument_group("fine-tuning (docs/training.md)")
    g.add_argument("--init-from", metavar="MODEL",
                   help="start the backbone from an exported model: a run directory (export/best.keras, else "
                        "embedding.keras), a .keras file, or 'starter' (the shipped MobileFaceNet trained on LFW "
                        "DevTrain people); the head is new, for --data's classes. --backbone, --embedding-size and "
                        "--image-size default to the model's; other values are refused. config.json records the "
                        "file and its sha256")
    g.add_argument("--freeze-backbone-steps", type=int, metavar="N",
                   help="train only the new head for the first N steps: the backbone's weights and batch-norm "
                        "statistics stay as loaded; then everything trains (default 0)")
    g.add_argument("--backbone-lr-mult", type=float, metavar="X",
                   help="the backbone's lr is X times the schedule's (the head gets the schedule's): default 0.1 "
                        "with --init-from (keep what the model knows), 1 otherwise")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help="per replica (default 64; 32 synthetic); global = this x replicas")
    g.add_argument("--lr", type=float,
                   help="peak lr of reference/constant/cosine/poly schedules (default: 0.1 x global batch / 256, "
                        "i.e. 0.025 at batch 64; 0.1 synthetic)")
    g.add_argument("--lr-schedule",
                   help=f"'reference' (default: the AM-Softmax steps {REFERENCE_LR_SCHEDULE} stretched to "
                        "--max-steps, from --lr), 'constant', 'cosine', 'poly' (power 2), or a 'STEP:LR,...' list")
    g.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 0)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float,
                   help="SGD weight decay (default 5e-4): gradient += wd*w, after --clip-grad-norm, on the "
                        "variables --weight-decay-rule picks")
    g.add_argument("--weight-decay-rule", choices=WEIGHT_DECAY_RULE_NAMES,
                   help="which variables are decayed (docs/protocols.md): kernels (default: conv/dense kernels "
                        "and class centres), insightface (+ BN gamma, PReLU slopes), caffe (all but biases), "
                        "all (arcface_torch)")
    g.add_argument("--head-wd-mult", type=float, help="weight-decay multiplier for the class centres (default 1)")
    g.add_argument("--clip-grad-norm", type=float, metavar="NORM",
                   help="clip each step's loss gradient to this global L2 norm before weight decay is added, "
                        "as Caffe does (default: off)")
    g.add_argument("--max-steps", type=int, help="default 30000 with --data (40 synthetic)")
    g.add_argument("--epochs", type=float, help="instead of --max-steps")
    g.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop after this much wall time (counted from when this invocation starts setting "
                        "up training: data, model and checkpoint restore included, imports not) with a "
                        "checkpoint, a validation and the export, even if --max-steps is not reached; the "
                        "lr schedule still spans --max-steps")
    g.add_argument("--mixed-precision", nargs="?", const="float16", choices=("auto", "off", "float16", "bfloat16"),
                   help="backbone precision; heads and loss stay float32. auto (default): float16 on a GPU, "
                        "bfloat16 on a CPU with native bf16 for the backbones it speeds up, else off; the "
                        "choice is printed. Bare flag = float16 (with loss scaling)")
    g.add_argument("--xla", nargs="?", const="on", choices=("auto", "on", "off"),
                   help="compile the forward/backward pass with XLA (jit_compile). auto (default): on for a "
                        "GPU, off on CPU (slower there for every backbone, see docs/experiments/training-speed.md). "
                        "Bare flag = on")
    g.add_argument("--no-xla", dest="xla", action="store_const", const="off", help="same as --xla off")
    g.add_argument("--collapse-guard", action=B,
                   help="stop a run whose embeddings collapse to one direction or whose loss is stuck "
                        "(default: on)")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--deterministic", action=B, help="deterministic data order and TF ops (slower)")
    g.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute: mirrored = all local GPUs; multiworker reads TF_CONFIG")

    g = p.add_argument_group("run directory, checkpoints and validation")
    g.add_argument("--output-dir", metavar="RUN", help="default runs/<UTC time>-<backbone>-<loss>")
    g.add_argument("--exports", metavar="FORMATS",
                   help="what RUN/export/ gets at the end, comma-separated from keras, saved_model, onnx "
                        "(default: all three; keras is required). ONNX can be made later with export_onnx.py")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --output-dir (default: the newest run) from its last checkpoint")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 1000)")
    g.add_argument("--log-every", type=int, help="steps between log lines / TensorBoard points (default 20)")
    g.add_argument("--val-every", type=int, help="steps between validations (default 2000)")
    g.add_argument("--val-pairs", metavar="FILE", help="pairs file (LFW-style or generic) for validation ...")
    g.add_argument("--val-dir", metavar="DIR", help="... and its folder of aligned images. Default: the "
                                                    "held-out identities of --data, if it has them")
    g.add_argument("--val-bin", nargs="+", metavar="SET.bin",
                   help="insightface verification sets (lfw.bin cfp_fp.bin agedb_30.bin) validated at every "
                        "validation beside the held-out identities: 10-fold accuracy +- std per set, logged to "
                        "TensorBoard and train_log.jsonl; read with a restricted unpickler. 112x112 sets are "
                        "centre-cropped for a 112x96 model. best.keras is chosen on the held-out identities' ROC "
                        "AUC when there are any, else on the mean AUC of these sets (docs/training.md)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli = {k: v for k, v in vars(args).items() if k != "config"}
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the progress bar

    # after parsing, so --help is instant
    from training.config import parse_option_items, resolve_config
    from training.guard import TrainingCollapsed, TrainingDiverged
    from training.preemption import TrainingInterrupted
    from training.run_dir import RunWriteError, load_run_config, new_run_dir, run_to_resume

    try:
        if args.backbone_options is not None:
            cli["backbone_options"] = parse_option_items(args.backbone_options, "--backbone-option")
        if args.resume:
            run_dir = run_to_resume(args.output_dir)
            config = resolve_config(cli, args.config, base=load_run_config(run_dir))
        else:
            config = resolve_config(cli, args.config)
            run_dir = new_run_dir(config.output_dir, config.backbone, config.loss)
        from training.trainer import run_training  # TensorFlow: after the config's errors are out

        summary = run_training(config, run_dir)   # resolves --mixed-precision/--xla auto, writes RUN/config.json
    except TrainingInterrupted as e:   # SIGTERM/SIGINT: checkpoint saved, the shell's status
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except (TrainingDiverged, TrainingCollapsed, RunWriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a log or best-model write that failed (disk full, ...): its file is named
        from fileio import DISK_FULL_ERRNOS
        hint = "; free space, then continue with --resume --output-dir RUN" if e.errno in DISK_FULL_ERRNOS else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1

    if summary["exports"]:   # the chief: render the TensorBoard scalars next to the run
        from training.curves import plot_learning_curves
        print(f"learning curves: {plot_learning_curves({run_dir.name: run_dir}, run_dir / 'learning_curves.png')}")
    if summary["synthetic"]:
        print("NOTE: this run used SYNTHETIC random data; its accuracy says nothing about faces. "
              "Train on real data with --data SHARDS (see docs/training.md).")
    if summary["time_limited"]:
        print(f"stopped by --time-limit {config.time_limit:g} min at step {summary['last_step']} of "
              f"{summary['steps']}; continue with --resume --output-dir {run_dir}")
    print(f"done: {summary['last_step']} steps in {summary['wall_seconds']:.0f} s (training "
          f"{summary['train_seconds']:.0f} s at {summary['images_per_sec']:.1f} img/s, validation "
          f"{summary['validation_seconds']:.0f} s, export {summary['export_seconds']:.0f} s, setup "
          f"{summary['setup_seconds']:.0f} s); last step's loss {summary['final_loss']:.4f}, train accuracy "
          f"{summary['final_accuracy']:.3f}; exported {summary['exports'].get('keras')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
