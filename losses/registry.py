"""The head registry: every head's options with their published defaults and valid ranges.

No Keras here, so ``train.py --help`` (whose flags are generated from this table) and the config
checks stay instant; ``losses.heads`` builds the layers from it. ``check_head_options`` is the one
validation of head options: ``build_head`` and ``training.config`` both call it.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Option:
    """One head option: its published default, what it must be, and a test of that."""
    default: object
    rule: str = "> 0"                      # what a valid value is, for messages and --help
    valid: object = lambda v: v > 0        # value -> bool (value already known to be the right type)
    kind: type = float                     # float, int or bool


def _number(rule, valid, kind=float):
    return lambda default: Option(default, rule, valid, kind)


_POSITIVE = _number("> 0", lambda v: v > 0)
_NON_NEGATIVE = _number(">= 0", lambda v: v >= 0)
_UNIT = _number("in [0, 1]", lambda v: 0 <= v <= 1)
_ANGLE = _number(">= 0 and below pi/2 (an angle in radians)", lambda v: 0 <= v < math.pi / 2)
_POSITIVE_INT = _number("a positive integer", lambda v: v >= 1 and int(v) == v, int)
_STEP = _number("a step >= 0 (0 = never)", lambda v: v >= 0 and int(v) == v, int)


def _flag():
    return lambda default: Option(default, "true or false", lambda v: True, bool)


def _optional(option):
    """The option, also accepting None (its default): 'off' / 'use the schedule'."""
    return dataclasses.replace(option, rule=option.rule + " (default: off)")


# What each option name means, for --help (the same name means the same thing in every head).
OPTION_HELP = {
    "s": "scale of the normalised logits",
    "m": "margin (angle in radians for arcface-like heads, cosine for am_softmax/cosface, integer for sphereface)",
    "m1": "combined margin cos(m1*theta + m2) - m3",
    "m2": "combined margin cos(m1*theta + m2) - m3",
    "m3": "combined margin cos(m1*theta + m2) - m3",
    "easy_margin": "margin only where cos(theta) > 0",
    "sphereface_lambda": "constant lambda blended into psi, (lambda*cos + psi)/(1 + lambda), instead of the "
                         "annealed schedule",
    "lambda_base": "sphereface lambda schedule max(lambda_min, base*(1 + gamma*iter)^-power)",
    "lambda_gamma": "sphereface lambda schedule (see --lambda-base)",
    "lambda_power": "sphereface lambda schedule (see --lambda-base)",
    "lambda_min": "sphereface lambda schedule (see --lambda-base)",
    "t_alpha": "momentum of the head's moving average (curricularface: t; adaface: the norms' batch statistics)",
    "h": "adaface: how far the norm-adaptive margin moves, h*standardised norm clipped to [-1, 1]",
    "l_a": "magface: lower bound of the feature magnitude a",
    "u_a": "magface: upper bound of the feature magnitude a",
    "l_m": "magface: margin at a = l_a",
    "u_m": "magface: margin at a = u_a",
    "lambda_g": "magface: weight of the magnitude regulariser g(a) = a/u_a^2 + 1/a",
    "k": "subcenter_arcface: sub-centres per class",
    "drop_step": "subcenter_arcface: from this step on each class keeps only its dominant sub-centre (0 = never)",
    "std": "elasticface: standard deviation of the per-example margin drawn from N(m, std)",
}


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """A head of the registry: its implementation (``losses.heads`` resolves the names) and options."""
    layer: str                  # losses.heads class name
    margin: str | None          # losses.margins function name (None: the layer computes its own logits)
    options: dict               # option name -> Option
    summary: str = ""
    partial_fc: bool = False    # --partial-fc can sample it: one centre per class, no state of its own
                                # (tests/test_partial_fc.py checks this against the layer class)

    @property
    def defaults(self):
        """{option: published default}."""
        return {name: option.default for name, option in self.options.items()}


def _arc(s=64.0, m=0.5):
    return {"s": _POSITIVE(s), "m": _ANGLE(m)}


# One entry per head, with the published defaults: AM-Softmax paper (s=30, m=0.35); CosFace/ArcFace as
# in insightface (s=64); SphereFace m=4 and the λ schedule of sphereface_model.prototxt; insightface's
# combined-margin example (1.0, 0.3, 0.2); CurricularFace, AdaFace, MagFace, ElasticFace: their authors'
# code and training scripts; sub-center ArcFace: K=3 (Deng et al. 2020).
HEADS = {
    "softmax": HeadSpec("SoftmaxHead", None, {}, "x.W + b, no normalisation"),
    "am_softmax": HeadSpec("NormalizedMarginHead", "am_softmax_logits",
                           {"s": _POSITIVE(30.0), "m": _NON_NEGATIVE(0.35)}, "s(cos - m)", partial_fc=True),
    "cosface": HeadSpec("NormalizedMarginHead", "am_softmax_logits",
                        {"s": _POSITIVE(64.0), "m": _NON_NEGATIVE(0.35)}, "s(cos - m), insightface's s", partial_fc=True),
    "arcface": HeadSpec("NormalizedMarginHead", "arcface_logits",
                        {**_arc(), "easy_margin": _flag()(False)}, "s cos(theta + m)", partial_fc=True),
    "sphereface": HeadSpec("SphereFaceHead", "sphereface_logits",
                           {"s": _POSITIVE(30.0), "m": _POSITIVE_INT(4),
                            "sphereface_lambda": _optional(_NON_NEGATIVE(None)),
                            "lambda_base": _POSITIVE(1000.0), "lambda_gamma": _NON_NEGATIVE(0.12),
                            "lambda_power": _NON_NEGATIVE(1.0), "lambda_min": _NON_NEGATIVE(5.0)},
                           "s (lambda cos + psi(theta))/(1 + lambda), lambda annealed"),
    "combined": HeadSpec("NormalizedMarginHead", "combined_margin_logits",
                         {"s": _POSITIVE(64.0), "m1": _POSITIVE(1.0), "m2": _NON_NEGATIVE(0.3),
                          "m3": _NON_NEGATIVE(0.2)}, "s(cos(m1 theta + m2) - m3)", partial_fc=True),
    # HuangYG123/CurricularFace: s=64, m=0.5, t's momentum 0.01.
    "curricularface": HeadSpec("CurricularFaceHead", None, {**_arc(), "t_alpha": _UNIT(0.01)},
                               "arcface target, hard negatives cos(t + cos)"),
    # mk-minchul/AdaFace scripts: m=0.4, h=0.333, s=64, t_alpha=0.01.
    "adaface": HeadSpec("AdaFaceHead", None, {"s": _POSITIVE(64.0), "m": _NON_NEGATIVE(0.4), "h": _NON_NEGATIVE(0.333),
                                              "t_alpha": _UNIT(0.01)},
                        "s(cos(theta - m z) - m z - m), z = the norm standardised"),
    # IrvingMeng/MagFace run script and MagLinear (easy_margin=True): s=64, a in [10, 110], m in [0.45, 0.8],
    # lambda_g=35.
    "magface": HeadSpec("MagFaceHead", None, {"s": _POSITIVE(64.0), "l_a": _POSITIVE(10.0), "u_a": _POSITIVE(110.0),
                                              "l_m": _ANGLE(0.45), "u_m": _ANGLE(0.8), "lambda_g": _NON_NEGATIVE(35.0),
                                              "easy_margin": _flag()(True)},
                        "s cos(theta + m(|x|)) + lambda_g g(|x|)", partial_fc=True),
    # Deng et al. 2020: K=3; the drop (dominant sub-centre only) is off unless a step is given.
    "subcenter_arcface": HeadSpec("SubCenterArcFaceHead", None, {**_arc(), "k": _POSITIVE_INT(3), "drop_step": _STEP(0)},
                                  "arcface on the max over k sub-centres"),
    # fdbtrs/ElasticFace config.py: (s, m, std) = (64, 0.5, 0.05) Arc, (64, 0.5, 0.0175) Arc+,
    # (64, 0.35, 0.05) Cos, (64, 0.35, 0.02) Cos+.
    "elasticface_arc": HeadSpec("ElasticFaceHead", "elastic_arc_logits", {**_arc(), "std": _NON_NEGATIVE(0.05)},
                                "s cos(theta + m_i), m_i ~ N(m, std)"),
    "elasticface_arc_plus": HeadSpec("ElasticFaceHead", "elastic_arc_logits", {**_arc(), "std": _NON_NEGATIVE(0.0175)},
                                     "elasticface_arc, larger m_i for harder examples"),
    "elasticface_cos": HeadSpec("ElasticFaceHead", "elastic_cos_logits",
                                {"s": _POSITIVE(64.0), "m": _NON_NEGATIVE(0.35), "std": _NON_NEGATIVE(0.05)},
                                "s(cos - m_i), m_i ~ N(m, std)"),
    "elasticface_cos_plus": HeadSpec("ElasticFaceHead", "elastic_cos_logits",
                                     {"s": _POSITIVE(64.0), "m": _NON_NEGATIVE(0.35), "std": _NON_NEGATIVE(0.02)},
                                     "elasticface_cos, larger m_i for harder examples"),
}


def list_heads():
    """Names accepted by ``build_head``."""
    return sorted(HEADS)


def head_options(name):
    """The option names head ``name`` takes, in the registry's order."""
    return list(HEADS[name].options)


def all_option_names():
    """Every option name of any head, each once (train.py's flags, the config's keys)."""
    names = []
    for spec in HEADS.values():
        names += [n for n in spec.options if n not in names]
    return names


def option_kind(option):
    """bool for a switch (--easy-margin / --no-easy-margin), else float: flags and config values are numbers,
    which ``check_head_options`` checks and converts to int where a head's option is one (sphereface's m)."""
    kinds = {spec.options[option].kind for spec in HEADS.values() if option in spec.options}
    if not kinds:
        raise KeyError(f"no head takes the option {option!r}")
    return bool if kinds == {bool} else float


def option_defaults_text(option):
    """'am_softmax 30, cosface 64, ...': each head's default of ``option``, for --help."""
    def text(value):
        return "off" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}"

    return ", ".join(f"{name} {text(spec.options[option].default)}" for name, spec in HEADS.items()
                     if option in spec.options)


def check_head_options(name, options):
    """The options of head ``name`` with the published defaults filled in; ValueError naming the head,
    the option and what it must be for an unknown head or option or a value out of range.

    An option given as None, or not given, takes its default."""
    if name not in HEADS:
        raise ValueError(f"unknown --loss {name!r}; valid: {', '.join(list_heads())}")
    spec = HEADS[name]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ValueError(f"--loss {name} takes {list(spec.options) or 'no options'}, not {unknown}")
    for key, value in given.items():
        option = spec.options[key]
        flag = f"--{key.replace('_', '-')}"
        if option.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{flag} of --loss {name} must be true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not option.valid(value):
            raise ValueError(f"{flag} of --loss {name} must be a number {option.rule}, got {value!r}")
        if option.kind is int:
            given[key] = int(value)
    return {**spec.defaults, **given}


def partial_fc_heads():
    """Names of the heads ``--partial-fc`` can sample, sorted."""
    return sorted(name for name, spec in HEADS.items() if spec.partial_fc)


def check_partial_fc(name, sample_rate):
    """ValueError (one line, naming the flag and the fix) unless head ``name`` can be sampled at
    ``sample_rate``, a share of the classes in (0, 1]."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"--partial-fc must be a sample rate in (0, 1], got {sample_rate}")
    if name in HEADS and name not in partial_fc_heads():
        raise ValueError(f"--partial-fc works with the heads with one centre per class and no state of their own "
                         f"({', '.join(partial_fc_heads())}); --loss {name} is not one of them")


def check_focal_gamma(gamma):
    """ValueError unless the focal loss's γ is a number >= 0 (0 = plain cross-entropy)."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(f"--focal (gamma) must be a number >= 0 (0 = plain cross-entropy), got {gamma!r}")
