"""Assemble a model bundle: golden examples, checksums, the sealed manifest, and an atomic publish.

The bundle is written into a staging directory beside the destination, verified with the same
loader the server uses, and only then renamed into place, so a reader never sees half a bundle.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, file_sha256, seal
from vae_serve.core.runtime import ENCODER_OUTPUTS
from vae_serve.export.model import Vae

GOLDEN_EXAMPLES = 4
# Multi-line lists of numbers are folded onto one line in manifest.json: indented structure,
# compact vectors. Only lists json.dumps broke over lines match, so no string value is touched.
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]")
# Golden outputs are torch's, checked against ONNX Runtime at load: same tolerance as export parity.
GOLDEN_ATOL = 1e-4
GOLDEN_RTOL = 1e-4


class PublishError(Exception):
    """The destination exists and may not be replaced."""


def staging_dir_for(out_dir: Path) -> Path:
    """A fresh empty directory beside ``out_dir`` (same filesystem, so the final rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


@torch.no_grad()
def golden_examples(vae: Vae, x: np.ndarray) -> dict:
    """A few fixed inputs with torch's encoder and decoder outputs, as the manifest stores them."""
    x = x[:GOLDEN_EXAMPLES]
    encoded = vae.encoder(torch.from_numpy(x))
    decoded = vae.decoder(encoded[0])
    return {
        "atol": GOLDEN_ATOL,
        "rtol": GOLDEN_RTOL,
        "encoder": {
            "inputs": {"x": x.tolist()},
            "outputs": {name: value.numpy().tolist() for name, value in zip(ENCODER_OUTPUTS, encoded, strict=True)},
        },
        "decoder": {
            "inputs": {"z": encoded[0].numpy().tolist()},
            "outputs": {
                name: value.numpy().tolist() for name, value in zip(vae.decoder.output_names, decoded, strict=True)
            },
        },
    }


def file_entries(directory: Path, names: list[str]) -> dict:
    return {
        name: {"sha256": file_sha256(directory / name), "size_bytes": (directory / name).stat().st_size}
        for name in names
    }


def write_manifest(staging: Path, document: dict) -> dict:
    """Add checksums of the graphs in ``staging``, seal, and write manifest.json; returns the sealed document."""
    graph_files = [graph["file"] for graph in document["graphs"].values()]
    sealed = seal({**document, "files": file_entries(staging, graph_files)})
    text = json.dumps(sealed, indent=1, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda match: "[" + re.sub(r",\s+", ", ", match.group(1)) + "]", text)
    (staging / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return sealed


def publish(staging: Path, out_dir: Path, replace_existing: bool) -> Path:
    """Verify the staged bundle with the serving loader, then move it to ``out_dir``."""
    load_bundle(staging)
    if out_dir.exists():
        if not replace_existing:
            raise PublishError(f"{out_dir} already exists; pass --force to replace it")
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir
