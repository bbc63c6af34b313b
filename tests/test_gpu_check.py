"""scripts/gpu_check.sh, dry-run on the CPU (GPU_CHECK_DEVICE=cpu): every step of the CUDA check
runs, so the script is ready for the first GPU machine; and without a CUDA provider the real check
fails at once, saying what to install."""

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_check(tmp_path, digits_bundle, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "BUNDLE": str(digits_bundle), **env}
    command = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=280, env=environment, check=False)


def test_dry_run_on_the_cpu_passes_every_step(tmp_path, digits_bundle):
    done = run_check(tmp_path, digits_bundle, GPU_CHECK_DEVICE="cpu", GPU_CHECK_MEASURE_S="0.3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "gpu-check.md").read_text()
    assert report.rstrip().endswith("**PASS**")
    for reply in ("Encode z_mean", "Decode x_mean", "Elbo iwae", "ScoreAnomaly negative_iwae", "Interpolate x_mean"):
        assert f"| {reply} | 0 | 0 | yes |" in report  # CPU against CPU: identical
    assert "batch 4096 (rows/s)" in report and "I/O binding" in report


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_without_cuda_the_check_fails_saying_what_to_install(tmp_path, digits_bundle):
    done = run_check(tmp_path, digits_bundle)
    assert done.returncode == 1
    assert "no CUDAExecutionProvider: install onnxruntime-gpu" in (tmp_path / "gpu-check.md").read_text()
