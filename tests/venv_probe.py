"""Run a probe script of tests/ with the Python of a venv of its own: Triton's and KServe's clients
pin protobuf and numpy versions the project's venv cannot share (scripts/test.sh makes both venvs)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `pip install "tritonclient[grpc,http]==2.51.0"` or `pip install kserve==0.21.0 pyyaml` into any venv works too.
TRITONCLIENT_PYTHON = Path(os.environ.get("VAE_TRITONCLIENT_PYTHON", ROOT / ".venvs/tritonclient/bin/python"))
KSERVE_PYTHON = Path(os.environ.get("VAE_KSERVE_PYTHON", ROOT / ".venvs/kserve/bin/python"))


def run_probe(python: Path, what: str, script: str, *args: str) -> subprocess.CompletedProcess:
    """tests/``script`` run by ``python`` with ``args``; the test is skipped when that venv is missing.

    ``what`` names the venv in the skip message. PYTHONPATH is dropped so that the probe imports
    only what its own venv has.
    """
    if not python.exists():
        pytest.skip(f"no {what} venv at {python} (scripts/test.sh makes it)")
    return subprocess.run(
        [str(python), str(ROOT / "tests" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        check=False,
    )
