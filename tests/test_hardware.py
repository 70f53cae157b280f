"""training/hardware.py: CPU description, fp32 peak, and what --mixed-precision/--xla auto choose."""

import dataclasses

import pytest

from training import hardware
from training.config import TrainConfig, resolve_config

CPUINFO_ZEN5 = {"model name": "AMD EPYC", "cpu family": "26", "vendor_id": "AuthenticAMD", "cpu MHz": "2600.000",
                "flags": "fpu sse avx2 fma avx512f avx512_bf16"}
CPUINFO_ZEN4 = {**CPUINFO_ZEN5, "cpu family": "25"}
CPUINFO_XEON_AMX = {"model name": "Intel Xeon", "cpu family": "6", "vendor_id": "GenuineIntel", "cpu MHz": "2000.0",
                    "flags": "avx2 fma avx512f amx_bf16 amx_tile"}
CPUINFO_AVX2 = {"model name": "AMD EPYC 7B12", "cpu family": "23", "vendor_id": "AuthenticAMD", "cpu MHz": "2000.0",
                "flags": "avx2 fma"}


@pytest.fixture
def cpu(monkeypatch):
    def use(info, cores=2):
        monkeypatch.setattr(hardware, "_cpuinfo", lambda: dict(info))
        monkeypatch.setattr(hardware.os, "cpu_count", lambda: cores)
    return use


def test_peak_from_width_and_clock(cpu):
    cpu(CPUINFO_ZEN5)
    peak, how = hardware.fp32_peak_gflops()
    assert peak == pytest.approx(2 * 2.6 * 64) and "64 FLOP/cycle" in how
    cpu(CPUINFO_ZEN4)   # 512-bit operations in two 256-bit halves
    assert hardware.fp32_peak_gflops()[0] == pytest.approx(2 * 2.6 * 32)
    cpu(CPUINFO_AVX2, cores=4)
    assert hardware.fp32_peak_gflops()[0] == pytest.approx(4 * 2.0 * 32)
    cpu({**CPUINFO_AVX2, "cpu MHz": ""})
    assert hardware.fp32_peak_gflops()[0] is None


def test_cpu_description_names_the_bf16_features(cpu):
    cpu(CPUINFO_ZEN5)
    assert hardware.cpu_description() == "AMD EPYC (family 26), 2 cores, 2600 MHz, AVX-512, AVX512_BF16, no AMX"
    cpu(CPUINFO_XEON_AMX)
    assert "AMX-BF16" in hardware.cpu_description() and hardware.cpu_has_native_bf16()
    cpu(CPUINFO_AVX2)
    assert "AVX2" in hardware.cpu_description() and not hardware.cpu_has_native_bf16()


@pytest.mark.parametrize("info,backbone,gpu,expected", [
    (CPUINFO_ZEN5, "resface20", False, "bfloat16"),
    (CPUINFO_ZEN5, "lresnet50e_ir", False, "bfloat16"),
    (CPUINFO_ZEN5, "mobilefacenet", False, "off"),
    (CPUINFO_AVX2, "resface20", False, "off"),
    (CPUINFO_AVX2, "mobilefacenet", True, "float16"),
])
def test_auto_precision(cpu, monkeypatch, info, backbone, gpu, expected):
    cpu(info)
    monkeypatch.setattr(hardware, "gpu_available", lambda: gpu)
    config = TrainConfig(backbone=backbone, mixed_precision="auto", xla="auto")
    lines = hardware.resolve_auto_settings(config)
    assert config.mixed_precision == expected and config.xla is gpu
    assert len(lines) == 2 and f"--mixed-precision auto -> {expected}" in lines[0]


def test_explicit_settings_are_kept_and_need_no_tensorflow(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_available", lambda: pytest.fail("looked for a GPU"))
    config = TrainConfig(backbone="resface20", mixed_precision="off", xla=True)
    assert hardware.resolve_auto_settings(config) == []
    assert (config.mixed_precision, config.xla) == ("off", True)


def test_new_runs_default_to_auto_and_resumes_keep_the_recorded_choice():
    config = resolve_config({"backbone": "resface20", "data": "shards"})
    assert (config.mixed_precision, config.xla) == ("auto", "auto")
    saved = dataclasses.asdict(dataclasses.replace(config, mixed_precision="bfloat16", xla=False))
    resumed = resolve_config({}, base=saved)
    assert (resumed.mixed_precision, resumed.xla) == ("bfloat16", False)
    assert resolve_config({"data": "shards", "xla": "on"}).xla is True
    assert resolve_config({"data": "shards", "xla": "off"}).xla is False
    with pytest.raises(ValueError, match="--xla must be"):
        resolve_config({"data": "shards", "xla": "sometimes"})
