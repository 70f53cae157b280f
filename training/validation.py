"""Verification accuracy during training, through the same code evaluate.py uses (evaluation/).

Sources: ``--val-pairs FILE --val-dir DIR`` (an LFW-style or generic pairs file and its aligned
images), else the held-out identities the TFRecord builder wrote (``val`` split + ``val_pairs.txt``);
and, beside it, every ``--val-bin SET.bin`` (insightface lfw.bin, cfp_fp.bin, agedb_30.bin, ...):
10 contiguous folds as insightface, accuracy mean ± std per set, the protocol of ``evaluate.py --bin``.

The ``best`` rule (``best_rule``): ``best.keras`` is chosen on the held-out (or --val-pairs) ROC AUC
when the run has one, as without --val-bin: the .bin sets then stay an unseen test, reported at every
validation. A run with only .bin sets chooses on their mean AUC (then they are no longer unseen, and
the log says so). A later model replaces best.keras unless its held-out AUC is below the best so far
by more than one standard error of that AUC (evaluation.auc_standard_error; exact ties only for the
.bin mean).

Why AUC, not accuracy: 10-fold accuracy on ~1,000 held-out pairs moves in steps of 0.1 % and ties
often; a rerun of the 577-step LFW benchmark scored 89.3 % at step 291 and again at step 577, and
keeping the first tie exported a half-trained model 3.4 points worse on pairsDevTest. Why the
standard error: four LFW View 1 runs with a cosine schedule each chose an earlier model whose AUC was
higher by less than 0.001, a tenth of what 1,000 pairs can resolve, and those models scored up to 1.4
points worse on pairsDevTest than the final ones (docs/experiments/lfw-view1-60min.md, "Choosing best.keras").
A later model (more training, a lower lr) wins whatever the noise cannot separate.
"""

import pickle
import time
from pathlib import Path

import numpy as np

import evaluation
from engines.keras_engine import make_embed_fn
from evaluation.binset import bin_image_loader, bin_pairset, load_bin
from evaluation.images import decode_rgb, folder_loader
from training.export import save_keras_atomic
from training.guard import TrainingDiverged


class Validator:
    """Callable: embedding model -> verification metrics dict (evaluation.verification_metrics)."""

    def __init__(self, name, pairs, images_by_path, image_size, batch_size=256, protocol="facenet"):
        self.name = name
        self.protocol = protocol   # evaluation.protocols: a .bin is scored as insightface scores it
        self.pairs = pairs
        self.images_by_path = images_by_path
        self.image_size = image_size
        self.batch_size = batch_size
        self._embed_fns = {}

    def __call__(self, embedding_model):
        # One compiled embed function per model, not one trace per validation.
        if id(embedding_model) not in self._embed_fns:
            self._embed_fns[id(embedding_model)] = make_embed_fn(embedding_model)
        embed_fn = self._embed_fns[id(embedding_model)]
        return evaluation.evaluate_pairs(embed_fn, self.pairs, self.images_by_path,
                                         batch_size=self.batch_size, protocol=self.protocol,
                                         image_size=self.image_size, progress=False)


def make_validator(config, data):
    """The held-out (or --val-pairs) Validator for this run, or None when there is none."""
    if config.val_pairs:
        pairs = evaluation.read_pairs(config.val_pairs)
        # folder_loader checks every image exists now, before any training time is spent.
        loader = folder_loader(config.val_dir, pairs.unique_paths())
        return Validator(Path(config.val_pairs).stem, pairs, loader, data.image_size)
    if data.shards is not None and data.shards.val_pairs_path is not None:
        from tfrecords.reader import read_split_images

        pairs = evaluation.read_pairs(data.shards.val_pairs_path)
        paths, images = read_split_images(data.shards, split="val")
        return Validator("heldout", pairs, dict(zip(paths, images)), data.image_size)
    return None


def make_bin_validators(config, image_size, log=print):
    """One Validator per ``--val-bin`` set, each read (restricted unpickler) and checked now, before training.

    image_size: the model's (H, W). A set whose images are as high and wider by an even number of
    pixels (insightface's 112x112 against a 112x96 model) is centre-cropped, exactly as
    ``evaluate.py --bin --center-crop`` does; any other size is an error naming the file.
    """
    validators, names = [], {}
    for path in config.val_bin or ():
        name = Path(path).stem
        if name in names:
            raise ValueError(f"--val-bin {path} and {names[name]} are both named {name!r} in the logs; rename one")
        names[name] = path
        try:
            bins, issame = load_bin(path)
        except pickle.UnpicklingError as e:   # refused: it asked for code, not data (message names the file)
            raise ValueError(str(e)) from None
        pairs = bin_pairset(path, issame)
        for fold in range(pairs.num_folds):
            kinds = issame[pairs.folds == fold]
            if kinds.all() or not kinds.any():
                raise ValueError(f"{path}: fold {fold} of its {pairs.num_folds} contiguous folds holds only "
                                 f"{'same' if kinds.all() else 'different'} pairs; a .bin lists its pairs so that "
                                 "every tenth has both kinds (as insightface's lfw.bin, cfp_fp.bin, agedb_30.bin)")
        height, width = decode_rgb(bins[0], f"image 0 of {path}").shape[:2]
        want_h, want_w = image_size
        crop = (height, width) != (want_h, want_w)
        if crop and not (height == want_h and width > want_w and (width - want_w) % 2 == 0):
            raise ValueError(f"{path}: its images are {height}x{width} (HxW) and the model takes {want_h}x{want_w}; "
                             f"use a .bin of {want_h}x{want_w} crops (python -m evaluation.binset writes one from "
                             "aligned crops) or train at the .bin's size")
        if crop:
            left = (width - want_w) // 2
            log(f"--val-bin {path}: {height}x{width} images, centre-cropped to {want_h}x{want_w} (columns {left}.."
                f"{left + want_w - 1}: for insightface's 112x112 sets exactly our 112x96 alignment)")
        validators.append(Validator(name, pairs, bin_image_loader(path, bins, image_size, crop), image_size,
                                    protocol="insightface"))
    return validators


def best_rule(validator, bin_validators):
    """What chooses best.keras in this run, in words (None when nothing is validated); see the module doc."""
    if validator is not None:
        extra = (f"; the --val-bin sets ({', '.join(v.name for v in bin_validators)}) are reported, never chosen on"
                 if bin_validators else "")
        return (f"best.keras is chosen on {validator.name} AUC (a later model within one standard error of the best "
                f"wins){extra}")
    if bin_validators:
        return (f"best.keras is chosen on the mean AUC of {', '.join(v.name for v in bin_validators)} "
                "(ties to the later step; no held-out identities: these sets choose the model, so they are no "
                "longer an unseen test)")
    return None


class Validation:
    """Each validation of the live embedding model at a step, on every set: logged, recorded, and exported
    as ``best.keras`` by the chief when its score beats the best so far (``best_val``, a checkpointed
    variable). The score follows best_rule (module doc)."""

    def __init__(self, validator, embedding_model, logger, best_val, best_path, chief, log=print,
                 bin_validators=()):
        self.validator = validator
        self.bin_validators = list(bin_validators)
        self.embedding_model = embedding_model
        self.logger = logger
        self.best_val = best_val
        self.best_path = best_path
        self.chief = chief
        self.log = log
        self.last_bins = None   # {set name: metrics} of the last validation's .bin sets
        self.best_step = None   # the step best.keras holds, and its accuracy (this invocation's choices)
        self.best_accuracy = None
        self.best_score = None  # the selection score (AUC) of the model best.keras holds

    @property
    def rule(self):
        return best_rule(self.validator, self.bin_validators)

    def _run(self, validator, step):
        started = time.perf_counter()
        try:
            metrics = validator(self.embedding_model)
        except evaluation.NonFiniteEmbeddings:
            # A diverged model whose loss stayed finite (its outputs can overflow while its weights are
            # finite, so the checkpoint guard need not have seen it): stopped like the guard's
            # divergences (train.py exit 1), not a crash of the validation.
            raise TrainingDiverged(
                f"the embeddings of the model after step {step} became NaN or Inf on {validator.name}; "
                f"training stopped. A checkpoint of that step, or of shortly before it, may hold the "
                f"diverging model: start a new run with a lower --lr or with --clip-grad-norm.") from None
        self.log(f"step {step}: validation on {validator.name}: accuracy {metrics['accuracy_mean']:.4f} "
                 f"± {metrics['accuracy_std']:.4f}, VAL {metrics['val']:.4f} at FAR {metrics['far']:.2g} "
                 f"(target 1e-3), AUC {metrics['auc']:.4f} ({time.perf_counter() - started:.1f} s)")
        self.logger.validation(step, validator.name, metrics)
        return metrics

    def __call__(self, step):
        """The held-out (or --val-pairs) metrics dict; None when the run has no such set (the .bin sets'
        metrics are in ``last_bins``). Does nothing when there is nothing to validate on."""
        if self.validator is None and not self.bin_validators:
            return None
        metrics = self._run(self.validator, step) if self.validator is not None else None
        if self.bin_validators:
            self.last_bins = {v.name: self._run(v, step) for v in self.bin_validators}
        if metrics is not None:
            score, accuracy = metrics["auc"], metrics["accuracy_mean"]
        else:
            score = float(np.mean([m["auc"] for m in self.last_bins.values()]))
            accuracy = float(np.mean([m["accuracy_mean"] for m in self.last_bins.values()]))
            if len(self.last_bins) > 1:
                self.logger.selection_score(step, "bin_mean", accuracy, score, list(self.last_bins))
        # best_val is the highest score seen; a later model within its noise replaces best.keras (module doc).
        noise = (evaluation.auc_standard_error(score, metrics["num_same"], metrics["num_different"])
                 if metrics is not None and "num_same" in metrics else 0.0)
        if score >= float(self.best_val) - noise:
            self.best_val.assign(max(score, float(self.best_val)))
            self.best_step, self.best_accuracy, self.best_score = step, accuracy, score
            if self.chief:
                save_keras_atomic(self.embedding_model, self.best_path)
            if metrics is None and len(self.last_bins) > 1:
                self.log(f"step {step}: mean AUC of the .bin sets {score:.4f} (accuracy {accuracy:.4f}), the best "
                         f"so far: exported {self.best_path.name}")
        return metrics

    @property
    def best(self):
        """The highest selection score (AUC) seen so far, or None before any validation (best.keras holds
        the latest model within one standard error of it: ``best_score``)."""
        return float(self.best_val) if float(self.best_val) >= 0 else None
