"""docs/your-model.md, run exactly as written: a user's own conv VAE, trained, exported with
``export_bundle``, served by a real vae-serve and scored through the client."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "your-model.md"


def doc_script() -> str:
    """Every ```python block of the page, in order: the complete script."""
    return "\n\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S))


def test_the_user_model_script_trains_exports_serves_and_scores(tmp_path):
    script = tmp_path / "your_model.py"
    script.write_text(doc_script(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    assert "serving my-conv-vae 1 inputs: pixel / 16" in output
    auroc = float(re.search(r"AUROC of the 7s against the other digits: ([0-9.]+)", output).group(1))
    # Independent check of the served scores: a conv VAE that never saw a 7 tells them apart well.
    assert auroc > 0.8, output
    manifest = json.loads((tmp_path / "models/my-conv-vae/1/manifest.json").read_text())
    assert manifest["preprocessing"] == {"loc": [0.0], "scale": [16.0], "description": "pixel / 16"}
    assert manifest["input"]["shape"] == [1, 8, 8] and manifest["latent_dim"] == 8
    assert manifest["training"]["epochs"] == 40
    raw_sample = np.array(re.search(r"raw grey levels: \[(.*?)\]", output, flags=re.S).group(1).split(), float)
    assert raw_sample.min() >= 0.0 and raw_sample.max() <= 16.0
