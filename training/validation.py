"""Verification accuracy during training, through the same code evaluate.py uses (evaluation/).

Sources, in order: ``--val-pairs FILE --val-dir DIR`` (an LFW-style or generic pairs file and its
aligned images), else the held-out identities the TFRecord builder wrote (``val`` split +
``val_pairs.txt``). Never a test set by default: the ``best`` export is chosen on this.
"""

import time
from pathlib import Path

import evaluation
from evaluation.images import folder_loader
from evaluation.model_io import make_embed_fn
from training.export import save_keras_atomic


class Validator:
    """Callable: embedding model -> verification metrics dict (evaluation.verification_metrics)."""

    def __init__(self, name, pairs, images_by_path, image_size, batch_size=256):
        self.name = name
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
                                         batch_size=self.batch_size, flip="concat",
                                         image_size=self.image_size, progress=False)


def make_validator(config, data):
    """The Validator for this run, or None when there is nothing to validate on."""
    if config.val_pairs:
        pairs = evaluation.read_pairs(config.val_pairs)
        # folder_loader checks every image exists now, before any training time is spent.
        loader = folder_loader(config.val_dir, pairs.unique_paths())
        return Validator(Path(config.val_pairs).stem, pairs, loader, data.image_size)
    manifest = data.manifest or {}
    if manifest.get("val_pairs"):
        import tfrecords

        pairs = evaluation.read_pairs(Path(config.data) / manifest["val_pairs"])
        paths, images = tfrecords.read_split_images(config.data, split="val")
        return Validator("heldout", pairs, dict(zip(paths, images)), data.image_size)
    return None


class Validation:
    """One validation of the live embedding model at a step: logged, recorded, and exported as
    ``best.keras`` by the chief when it beats the best so far (``best_val``, a checkpointed variable)."""

    def __init__(self, validator, embedding_model, logger, best_val, best_path, chief, log=print):
        self.validator = validator
        self.embedding_model = embedding_model
        self.logger = logger
        self.best_val = best_val
        self.best_path = best_path
        self.chief = chief
        self.log = log

    def __call__(self, step):
        """Metrics dict, or None when the run has nothing to validate on."""
        if self.validator is None:
            return None
        started = time.perf_counter()
        metrics = self.validator(self.embedding_model)
        self.log(f"step {step}: validation on {self.validator.name}: accuracy {metrics['accuracy_mean']:.4f} "
                 f"± {metrics['accuracy_std']:.4f}, VAL {metrics['val']:.4f} at FAR {metrics['far']:.2g} "
                 f"(target 1e-3), AUC {metrics['auc']:.4f} ({time.perf_counter() - started:.1f} s)")
        self.logger.validation(step, self.validator.name, metrics)
        if metrics["accuracy_mean"] > float(self.best_val) and self.chief:
            self.best_val.assign(metrics["accuracy_mean"])
            save_keras_atomic(self.embedding_model, self.best_path)
        return metrics

    @property
    def best(self):
        return float(self.best_val) if float(self.best_val) >= 0 else None
