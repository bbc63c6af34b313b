"""A short soak (bench/soak.py) in CI: mixed traffic with a client-side ledger against one server,
and against two behind a round-robin retrying channel with one SIGKILLed halfway."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", [[], ["--kill"]], ids=["single", "kill"])
def test_short_soak_answers_every_call(digits_bundle, mode):
    command = [sys.executable, str(ROOT / "bench/soak.py"), "--bundle", str(digits_bundle), "--clients", "6"]
    result = subprocess.run(
        [*command, "--minutes", "0.25", "--warmup", "3", *mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    assert verdict["passed"] and result.returncode == 0, verdict
    assert verdict["calls"] > 100 and verdict["codes"]["OK"] > 0 and verdict["hung_clients"] == 0
    if mode:
        assert verdict["answered_fraction"] >= 0.999
    else:
        assert verdict["checks"]["server counters equal the ledger"]
