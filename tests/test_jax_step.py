"""benchmarks/jax_step.py: flag checks, the backend guard, and (where JAX is installed) a real run."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import jax_step

REPO = Path(__file__).resolve().parent.parent


def test_flags_parse_and_quick_overrides():
    args = jax_step.parse_args(["--backbones", "resface20, lresnet50e_ir", "--batch-sizes", "64,512",
                                "--precisions", "bfloat16, off", "--image-size", "112x112"])
    assert args.backbones == ["resface20", "lresnet50e_ir"]
    assert args.batch_sizes == [64, 512]
    assert args.precisions == ["bfloat16", "off"]
    assert args.image_size == (112, 112)
    quick = jax_step.parse_args(["--quick"])
    assert (quick.backbones, quick.batch_sizes, quick.num_classes, quick.steps, quick.rounds) == \
        (["mobilefacenet"], [8], 100, 2, 2)


@pytest.mark.parametrize("argv", [["--precisions", "fp8"], ["--precisions", "float16"], ["--batch-sizes", "64,x"], ["--batch-sizes", "0"],
                                  ["--steps", "0"], ["--image-size", "100x100"]])
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        jax_step.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_refuses_a_backend_other_than_jax():
    # The TensorFlow backend (the project's) must be refused with the fix, not half-run.
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed here (an environment made for JAX)")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, "-m", "benchmarks.jax_step", "--quick"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "needs Keras' JAX backend" in result.stderr and "KERAS_BACKEND=jax" in result.stderr


def test_trains_on_jax(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed here; benchmarks/jax_step.py runs only on Keras' JAX backend")
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = tmp_path / "quick"
    result = subprocess.run([sys.executable, "-m", "benchmarks.jax_step", "--quick", "--precisions", "off",
                             "--output", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["backbone"] == "mobilefacenet"
    # One repeated batch: the real loss, weight decay and SGD must drive its loss down.
    assert 0 < rows[0]["last_loss"] < rows[0]["first_loss"]
    assert "| mobilefacenet | fp32 | 8 |" in out.with_suffix(".md").read_text()
