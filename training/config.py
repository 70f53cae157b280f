"""Training configuration: defaults < --config file (YAML/JSON) < command-line flags.

The resolved configuration is written to RUN/config.json; ``--resume`` reads it back, so a
resumed run trains the same model with the same schedule unless a flag says otherwise.
"""

import dataclasses
import json
import typing
from pathlib import Path

from fileio import parse_image_size
from losses.registry import (
    HEADS,
    all_option_names,
    check_focal_gamma,
    check_head_options,
    check_partial_fc,
    option_kind,
)

# The reference AM-Softmax schedule (CASIA scale, batch 256): lr 0.1, x0.1 at 16k, 24k, 28k. The
# default "reference" is this list stretched to the run's length (training/schedules.py).
REFERENCE_LR_SCHEDULE = "0:0.1,16000:0.01,24000:0.001,28000:0.0001"
# --weight-decay-rule's choices; training.state.WEIGHT_DECAY_RULES says what each decays
WEIGHT_DECAY_RULE_NAMES = ("kernels", "insightface", "caffe", "all")
REFERENCE_LR, REFERENCE_BATCH = 0.1, 256


@dataclasses.dataclass
class TrainConfig:
    """Every training setting; field names equal the flag names with '-' -> '_'."""

    data: str | None = None              # TFRecord folder from tfrecords.build; None -> synthetic
    backbone: str = "resface20"
    backbone_options: dict = dataclasses.field(default_factory=dict)  # new runs: models.TRAINING_OPTIONS
    loss: str = "am_softmax"
    head_options: dict = dataclasses.field(default_factory=dict)  # e.g. {"m": 0.35}; missing -> published
    focal: float = 0.0                   # focal-loss gamma; 0 = plain cross-entropy
    singletons: str = "classes"          # identities with one training image: classes | negatives
    singleton_weight: float = 1.0        # loss weight of those identities' images
    embedding_size: int = 512
    image_size: str | None = None        # "HxW"; None -> the manifest's (synthetic: SYNTHETIC_DEFAULTS)
    batch_size: int = 64                 # per replica; global = batch_size x replicas
    lr: float | None = None              # None -> reference_lr(global batch): 0.1 x global batch / 256
    lr_schedule: str = "reference"      # REFERENCE_LR_SCHEDULE stretched to max_steps
    warmup_steps: int = 0
    margin_warmup_steps: int = 0         # the margin grows linearly from 0 over these steps; 0 = off
    momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_decay_rule: str = "kernels"   # which variables are decayed: training.state.WEIGHT_DECAY_RULES
    head_wd_mult: float = 1.0
    clip_grad_norm: float | None = None  # global L2 norm bound of each step's gradient; None = off
    partial_fc: float | None = None      # Partial FC sample rate in (0, 1]; None = the full head
    dropout: float | None = None        # None -> the backbone's default (lresnet50e_ir: 0.4)
    max_steps: int | None = None
    epochs: float | None = None
    time_limit: float | None = None      # minutes of wall time for this invocation; None -> no limit
    mixed_precision: str = "off"         # off | float16 | bfloat16 | auto (train.py's default)
    xla: bool | str = False              # True | False | "auto" (train.py's default)
    seed: int = 0
    collapse_guard: bool = True          # stop a collapsed or stuck run (training/guard.py)
    deterministic: bool = False
    shuffle_buffer: int = 20000
    augment_scale: float = 0.0           # random zoom in [1 - x, 1 + x] (tfrecords/augment.py); 0 = off
    augment_shift: float = 0.0           # random translation, fraction of H and W
    augment_rotate: float = 0.0          # random rotation, degrees
    augment_color: float = 0.0           # brightness / contrast / saturation factors in [1 - x, 1 + x]
    output_dir: str | None = None
    exports: str = "keras,saved_model,onnx"   # what RUN/export/ gets at the end (training/export.py)
    resume: bool = False
    strategy: str = "default"            # default | mirrored | multiworker
    checkpoint_every: int = 1000
    log_every: int = 20
    val_every: int = 2000
    val_pairs: str | None = None         # LFW-style or generic pairs file ...
    val_dir: str | None = None           # ... with its folder of aligned images
    val_bin: list | None = None          # insightface .bin sets (lfw.bin, cfp_fp.bin, ...) validated beside them
    init_from: str | None = None         # fine-tuning: the exported model (.keras) the backbone starts from
    init_from_sha256: str | None = None  # ... and its file's sha256 (recorded when the run starts)
    freeze_backbone_steps: int = 0       # fine-tuning: the backbone (weights and BN statistics) frozen this long
    backbone_lr_mult: float | None = None  # backbone lr = this x the schedule's; None -> 0.1 with init_from, else 1
    num_classes: int = 1000              # synthetic data only
    synthetic_images: int = 1024         # synthetic data only: distinct random images

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Without --data the run is the newcomer's smoke test: a small backbone and few steps, so it
# finishes in about a minute on a 2-core CPU. Flags still override each of these.
# A new run from train.py lets the machine choose (training/hardware.py); the resolved choice is
# what config.json records, so a resumed run keeps it. The dataclass itself stays explicit.
NEW_RUN_DEFAULTS = {"mixed_precision": "auto", "xla": "auto"}

SYNTHETIC_DEFAULTS = {
    "backbone": "mobilefacenet",
    "image_size": "112x96",
    "batch_size": 32,
    "max_steps": 40,
    "num_classes": 100,
    "lr_schedule": "constant",
    "lr": 0.1,
    "checkpoint_every": 20,
    "log_every": 5,
    "val_every": 20,
}
# With --data and no --max-steps/--epochs: the reference schedule's length.
DEFAULT_MAX_STEPS = 30000

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Head options keep their own flags (--s, --m, ...) and config-file keys; the config carries them in
# ``head_options``, checked by the head registry (losses.registry, Keras-free, the one list of them).
HEAD_OPTION_KEYS = tuple(all_option_names())
assert not set(HEAD_OPTION_KEYS) & set(_FIELDS), "a head option may not share a name with a config field"


def load_config_file(path):
    """Read a YAML or JSON file of ``{flag_name: value}``; unknown keys are an error naming them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    values, lines = _parse_config_text(path, text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    for key, value in values.items():   # a key of another type (YAML `1: x`) or a value of the wrong type
        where = f"{path}:{lines.get(key, '?')}"
        if not isinstance(key, str):
            raise ValueError(
                f"{where}: option name {key!r} is not a name; write option: value, e.g. lr: 0.1")
        problem = _type_problem(key.replace("-", "_"), value)
        if problem:
            raise ValueError(f"{where}: {key}: {problem}")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(_FIELDS) - set(HEAD_OPTION_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; valid: {sorted(set(_FIELDS) | set(HEAD_OPTION_KEYS))}")
    return values


def _parse_config_text(path, text):
    """(values, {key: line number}) of a YAML or JSON config; ValueError naming the file and line."""
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:   # safe_load refuses tags (!!python/object ...): a ConstructorError, a YAMLError like syntax errors
            values = yaml.safe_load(text) or {}
            node = yaml.compose(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"{path}{line}: not valid YAML ({problem}); write one 'option: value' per line, "
                             "without tags") from None
        lines = ({key.value: key.start_mark.line + 1 for key, _ in node.value}
                 if isinstance(node, yaml.MappingNode) else {})
        lines = {k2: n for k2, n in ((yaml.safe_load(k) if isinstance(k, str) else k, n) for k, n in lines.items())}
        return values, lines
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    lines = {}
    if isinstance(values, dict):
        for key in values:
            at = text.find(json.dumps(key))
            lines[key] = text.count("\n", 0, at) + 1 if at >= 0 else "?"
    return values, lines


def _type_problem(key, value):
    """Why ``value`` cannot be option ``key`` ("expected a number, got the string '0.1'"), or None."""
    if key in HEAD_OPTION_KEYS:
        allowed = (bool,) if option_kind(key) is bool else (int, float)   # ranges: check_head_options
    elif key in _FIELDS:
        annotation = _FIELDS[key].type
        allowed = typing.get_args(annotation) or (annotation,)
    else:
        return None   # unknown keys are named together afterwards
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        ok = bool in allowed
    elif isinstance(value, int):
        ok = int in allowed or float in allowed
    elif isinstance(value, float):
        ok = float in allowed
    else:
        ok = any(isinstance(value, t) for t in allowed if isinstance(t, type) and t not in (bool, int, float))
    if ok:
        return None
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list", type(None): "null"}
    wanted = " or ".join(dict.fromkeys(names.get(t, str(t)) for t in allowed))
    return f"expected {wanted}, got {type(value).__name__} {value!r}" + (
        " (remove the quotes)" if isinstance(value, str) else "")


# The keys a config.json from before head_options existed stored as False / 0.0 for "off" (a fact of that
# old file format, not of the registry).
_LEGACY_OFF = ("easy_margin", "sphereface_lambda")


def _gather_head_options(layer, legacy=False):
    """Move the head option keys of one layer (flags, file, saved run) into its ``head_options``.

    ``legacy``: a run config saved before head_options existed stored every key, with False / 0.0
    meaning "off"; only the values that were set carry over.
    """
    layer = dict(layer)
    options = dict(layer.get("head_options") or {})
    for key in HEAD_OPTION_KEYS:
        value = layer.pop(key, None)
        if value is None or (legacy and key in _LEGACY_OFF and not value):
            continue
        options[key] = value
    if options or "head_options" in layer:
        layer["head_options"] = options
    return layer


def parse_option_items(items, flag):
    """["batch_norm=true", "dropout=0.2"] -> {"batch_norm": True, "dropout": 0.2} (values as YAML scalars)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. batch_norm=true")
        options[key.strip()] = yaml.safe_load(value)
    return options


def resolve_config(cli_values, config_file=None, base=None):
    """Merge layers into a TrainConfig: dataclass defaults, synthetic preset (when there is no
    data), ``base`` (a saved run's config, on resume), the config file, then explicit flags.

    ``cli_values`` maps field names to values; None means "not given on the command line".
    Option dicts (``head_options``, ``backbone_options``) merge key by key across the layers; a new
    run's backbone options start from ``models.TRAINING_OPTIONS`` for its backbone (resface: BN).
    """
    layers = []
    if base:
        layers.append(_gather_head_options(base, legacy="head_options" not in base))
    if config_file:
        layers.append(_gather_head_options(load_config_file(config_file)))
    layers.append(_gather_head_options({k: v for k, v in cli_values.items() if v is not None}))
    for layer in layers:
        for key in ("head_options", "backbone_options"):
            if key in layer and not isinstance(layer[key], dict):
                raise ValueError(f"{key} must be a mapping of option names to values, got {layer[key]!r}")

    values = dataclasses.asdict(TrainConfig())
    if not base:
        values.update(NEW_RUN_DEFAULTS)
    if not any("data" in layer and layer["data"] is not None for layer in layers) and not base:
        values.update(SYNTHETIC_DEFAULTS)
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k not in ("head_options", "backbone_options")})
    if base:
        # A run saved before backbone options existed trained the builders' defaults ({}).
        backbone_options = {}
    else:
        from models import TRAINING_OPTIONS
        backbone_options = dict(TRAINING_OPTIONS.get(values["backbone"], {}))
    head_options = {}
    for layer in layers:
        backbone_options.update(layer.get("backbone_options") or {})
        head_options.update(layer.get("head_options") or {})
    if values["xla"] in ("on", "off"):   # the flag's words; config files may say true/false
        values["xla"] = values["xla"] == "on"
    config = TrainConfig(**{**values, "backbone_options": backbone_options, "head_options": head_options})
    if base:
        check_resume(config, base)
    elif config.init_from:   # fine-tuning: the init model's architecture, where the user set none
        from training.init_from import adopt_init_architecture

        given = {k for layer in layers for k in layer}
        adopt_init_architecture(config, given)
        if "backbone_options" not in given:
            from models import TRAINING_OPTIONS
            config.backbone_options = dict(TRAINING_OPTIONS.get(config.backbone, {}))
    if config.backbone_lr_mult is None:   # recorded resolved: a resumed run keeps it
        config.backbone_lr_mult = 0.1 if config.init_from else 1.0

    lr_given = any("lr" in layer for layer in layers[1 if base else 0:])
    if lr_given and config.lr is not None and config.lr_schedule.split(",")[0].startswith("0:"):
        first = float(config.lr_schedule.split(",")[0].split(":")[1])
        if first != config.lr:
            raise ValueError(
                f"--lr {config.lr} disagrees with the step schedule {config.lr_schedule!r}, whose "
                "values are absolute: give --lr-schedule with your values, or 'constant'/'cosine'/'poly'")
    if config.data and config.max_steps is None and config.epochs is None:
        config.max_steps = DEFAULT_MAX_STEPS
    _check(config)
    return config


def augmentation(config):
    """The run's tfrecords.augment.Augmentation (the flip is always on; these add to it)."""
    from tfrecords.augment import Augmentation

    return Augmentation(scale=config.augment_scale, shift=config.augment_shift, rotate=config.augment_rotate,
                        color=config.augment_color)


def reference_lr(global_batch):
    """The default peak lr: the reference's 0.1 per global batch of 256, scaled linearly (Goyal et al.
    2017): 0.025 at batch 64. Measured on LFW DevTrain (benchmarks/README.md): ResFace20-BN reached
    78.4 % held-out in 150 steps at 0.025 and 68.5 % at 0.1."""
    return REFERENCE_LR * global_batch / REFERENCE_BATCH


# Settings that shape the network or its checkpoint: a resumed run must keep them, or it could not
# restore its checkpoint (and its config.json would no longer describe it).
_RUN_SHAPING = ("backbone", "backbone_options", "embedding_size", "loss", "image_size", "data", "dropout", "init_from")


def check_resume(config, base):
    """ValueError naming the settings a --resume tries to change that the saved run cannot take."""
    changed = [k for k in _RUN_SHAPING if k in base and base[k] != getattr(config, k)]
    # Partial FC stores its centres class-major with their own momentum: switching it on or off
    # changes the head's variables (another rate is fine).
    if (base.get("partial_fc") is None) != (config.partial_fc is None):
        changed.append("partial_fc")
    if changed:
        raise ValueError(f"--resume cannot change {', '.join(changed)} "
                         f"({'; '.join(f'{k}: {base[k]!r} -> {getattr(config, k)!r}' for k in changed)}); "
                         "start a new run with another --output-dir instead")


def _check_partial_fc(config):
    if config.partial_fc is None:
        return
    check_partial_fc(config.loss, config.partial_fc)
    if config.strategy != "default" and config.singletons == "negatives":
        raise ValueError(f"--partial-fc under --strategy {config.strategy} does not support --singletons negatives; "
                         "use --singletons classes or train on one device")
    # Each of these would need the sampled centres' gradient inside the Keras optimizer's own logic.
    if config.clip_grad_norm is not None:
        raise ValueError("--partial-fc with --clip-grad-norm is not supported: the sampled centres are updated "
                         "outside the optimizer that clips; drop one of them")
    if config.mixed_precision == "float16":
        raise ValueError("--partial-fc with --mixed-precision float16 is not supported (loss scaling); "
                         "use bfloat16 or off")


def _check(config):
    if config.image_size is not None:   # the one image-size rule (fileio.images): form and trainable
        try:
            height, width = parse_image_size(config.image_size)
        except ValueError as e:
            raise ValueError(f"--image-size: {e}") from None
        config.image_size = f"{height}x{width}"
    if config.lr is not None and not config.lr > 0:
        raise ValueError(f"--lr must be > 0, got {config.lr}")
    check_head_options(config.loss, config.head_options)   # the head registry: names, options, ranges
    check_focal_gamma(config.focal)
    _check_partial_fc(config)
    if config.max_steps is not None and config.epochs is not None:
        raise ValueError("give --max-steps or --epochs, not both")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {config.max_steps}")
    if config.epochs is not None and not config.epochs > 0:
        raise ValueError(f"--epochs must be > 0, got {config.epochs}")
    if config.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {config.warmup_steps}")
    if config.singletons not in ("classes", "negatives"):
        raise ValueError(f"--singletons must be classes or negatives, not {config.singletons!r}")
    if not config.singleton_weight >= 0:
        raise ValueError(f"--singleton-weight must be >= 0, got {config.singleton_weight}")
    if config.margin_warmup_steps < 0:
        raise ValueError(f"--margin-warmup-steps must be >= 0, got {config.margin_warmup_steps}")
    if config.margin_warmup_steps and HEADS[config.loss].layer == "SoftmaxHead":
        raise ValueError(f"--margin-warmup-steps needs a margin head; --loss {config.loss} has no margin")
    if not 0 <= config.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {config.momentum}")
    if config.weight_decay < 0 or config.head_wd_mult < 0:
        raise ValueError("--weight-decay and --head-wd-mult must be >= 0")
    if config.weight_decay_rule not in WEIGHT_DECAY_RULE_NAMES:
        raise ValueError(f"--weight-decay-rule must be one of {', '.join(WEIGHT_DECAY_RULE_NAMES)}, "
                         f"not {config.weight_decay_rule!r}")
    if config.embedding_size < 1:
        raise ValueError(f"--embedding-size must be >= 1, got {config.embedding_size}")
    if config.time_limit is not None and config.time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0 minutes, got {config.time_limit}")
    if config.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {config.batch_size}")
    if config.clip_grad_norm is not None and not config.clip_grad_norm > 0:
        raise ValueError(f"--clip-grad-norm must be > 0, got {config.clip_grad_norm}")
    if config.mixed_precision not in ("auto", "off", "float16", "bfloat16"):
        raise ValueError(f"--mixed-precision must be auto, off, float16 or bfloat16, not {config.mixed_precision!r}")
    if config.xla not in ("auto", True, False):
        raise ValueError(f"--xla must be auto, on or off, not {config.xla!r}")
    export_formats(config.exports)
    if config.strategy not in ("default", "mirrored", "multiworker"):
        raise ValueError(f"--strategy must be default, mirrored or multiworker, not {config.strategy!r}")
    augmentation(config)   # its own range checks, with the flag's name
    if (config.val_pairs is None) != (config.val_dir is None):
        raise ValueError("--val-pairs and --val-dir go together (a pairs file and its aligned images)")
    if isinstance(config.val_bin, str):   # a config file may give one set as a plain string
        config.val_bin = [config.val_bin]
    for path in config.val_bin or ():
        if not Path(path).is_file():
            raise FileNotFoundError(f"--val-bin file not found: {path} (insightface packs ship lfw.bin, cfp_fp.bin, "
                                    "agedb_30.bin beside train.rec)")
    if config.freeze_backbone_steps < 0:
        raise ValueError(f"--freeze-backbone-steps must be >= 0, got {config.freeze_backbone_steps}")
    if config.freeze_backbone_steps and config.partial_fc is not None:
        raise ValueError("--freeze-backbone-steps with --partial-fc is not supported (the sampled centres are "
                         "updated outside the optimizer); drop one of them")
    if config.backbone_lr_mult is not None and not config.backbone_lr_mult >= 0:
        raise ValueError(f"--backbone-lr-mult must be >= 0, got {config.backbone_lr_mult}")
    for name in ("checkpoint_every", "log_every", "val_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


EXPORT_FORMATS = ("keras", "saved_model", "onnx")


def export_formats(exports):
    """"keras,onnx" (or a config file's list) -> ["keras", "onnx"]: the --exports formats, checked.
    keras is required: evaluate.py, verify.py and export_onnx.py read the .keras file."""
    items = exports if isinstance(exports, (list, tuple)) else str(exports).split(",")
    formats = [str(f).strip() for f in items if str(f).strip()]
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"--exports: unknown format(s) {unknown}; valid: {', '.join(EXPORT_FORMATS)}")
    if "keras" not in formats:
        raise ValueError(f"--exports must include keras (evaluate.py and export_onnx.py read embedding.keras), "
                         f"got {exports!r}")
    return formats
