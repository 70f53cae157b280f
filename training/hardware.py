"""What this machine is, for the figures we print and the choices --mixed-precision/--xla auto make.

The same training step runs at very different speeds on different CPUs: bfloat16 pays off only
where the CPU multiplies bf16 natively (AVX512_BF16, AMX-BF16), and XLA's CPU backend lacks a fast
depthwise convolution. Every speed figure names the CPU (``cpu_description``).
"""

import os
from pathlib import Path


def _cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:   # not Linux: describe what Python knows
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())   # the first processor's
    return fields


def cpu_flags():
    """The first CPU's feature flags (``/proc/cpuinfo``), e.g. {"avx2", "avx512f", "avx512_bf16"}."""
    return set(_cpuinfo().get("flags", "").split())


def cpu_description():
    """"AMD EPYC (family 26), 2 cores, 2596 MHz, AVX-512, AVX512_BF16, no AMX": the CPU behind a figure."""
    info, flags = _cpuinfo(), cpu_flags()
    if not info:
        import platform
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    parts = [f"{info.get('model name', '?')} (family {info.get('cpu family', '?')})", f"{os.cpu_count()} cores"]
    if info.get("cpu MHz"):
        parts.append(f"{float(info['cpu MHz']):.0f} MHz")
    parts.append("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")
    parts.append("AVX512_BF16" if "avx512_bf16" in flags else "no AVX512_BF16")
    parts.append("AMX-BF16" if "amx_bf16" in flags else "no AMX")
    return ", ".join(parts)


def cpu_has_native_bf16():
    """True when the CPU multiplies bfloat16 in hardware (AVX512_BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def fp32_peak_gflops():
    """(fp32 peak GFLOP/s of all cores, how it was derived): cores x clock x FLOP per cycle per core.

    FLOP per cycle = 2 FMA pipes x vector lanes x 2 (multiply + add): 64 with full-width AVX-512,
    32 with AVX2 or with AVX-512 on AMD Zen 4 (family 25), which splits 512-bit operations into two
    256-bit halves. The clock is /proc/cpuinfo's current "cpu MHz" (on a VM, the host's nominal clock).
    """
    info, flags = _cpuinfo(), cpu_flags()
    mhz = float(info.get("cpu MHz", 0) or 0)
    if not mhz:
        return None, "unknown clock: pass --peak-gflops"
    full_avx512 = "avx512f" in flags and not (info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25")
    lanes = 16 if full_avx512 else 8 if "avx2" in flags else 4
    flop_per_cycle = 2 * lanes * 2
    cores = os.cpu_count() or 1
    peak = cores * mhz / 1000 * flop_per_cycle
    return peak, (f"{cores} cores x {mhz / 1000:.2f} GHz x {flop_per_cycle} FLOP/cycle "
                  f"(2 FMA x {lanes} fp32 lanes x 2)")


def gpu_available():
    """True when TensorFlow sees a GPU (imports TensorFlow)."""
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


# Backbones whose CPU training step bfloat16 speeds up on a CPU with native bf16: benchmarks/backbone_step.py,
# batch 64, fused layers, AMD EPYC with AVX512_BF16, alone: resface20 (BN) 1.51x, lresnet50e_ir 1.54x,
# mobilefacenet 0.88x (its depthwise convolutions and element-wise work gain nothing);
# docs/experiments/training-speed.md.
BF16_FASTER_ON_CPU = {"resface20", "resface36", "lresnet50e_ir"}


def choose_precision(backbone, gpu):
    """(--mixed-precision value, why) for --mixed-precision auto."""
    if gpu:
        return "float16", "GPU: float16 with loss scaling, the tensor-core recipe"
    if not cpu_has_native_bf16():
        return "off", "this CPU has no native bfloat16 (AVX512_BF16 / AMX-BF16): float32"
    if backbone in BF16_FASTER_ON_CPU:
        return "bfloat16", f"CPU with native bfloat16: faster for {backbone}"
    return "off", f"float32: bfloat16 does not speed up {backbone} on this CPU"


def choose_xla(backbone, gpu):
    """(--xla value, why) for --xla auto."""
    if gpu:
        return True, "GPU: XLA fuses the element-wise work around the convolutions"
    return False, "CPU: XLA's CPU convolutions are slower than oneDNN's for every backbone"


def resolve_auto_settings(config):
    """Replace ``auto`` in config.mixed_precision / config.xla by this machine's choice, in place.

    Returns the lines to print (one per choice made); none when nothing was ``auto``. Imports
    TensorFlow (to look for a GPU) only when something is ``auto``.
    """
    lines = []
    if "auto" not in (config.mixed_precision, config.xla):
        return lines
    gpu = gpu_available()
    if config.mixed_precision == "auto":
        config.mixed_precision, why = choose_precision(config.backbone, gpu)
        if config.mixed_precision == "float16" and getattr(config, "partial_fc", None) is not None:
            config.mixed_precision, why = "bfloat16", "GPU with --partial-fc, which float16's loss scaling cannot take"
        lines.append(f"--mixed-precision auto -> {config.mixed_precision} ({why}; set it to override)")
    if config.xla == "auto":
        config.xla, why = choose_xla(config.backbone, gpu)
        lines.append(f"--xla auto -> {'on' if config.xla else 'off'} ({why}; set it to override)")
    return lines
