"""Write a model bundle: the files' checksums, the sealed manifest, and an atomic publish.

The bundle is written into a staging directory beside the destination, verified with the same
loader the server uses, and only then renamed into place, so a reader never sees half a bundle.
Imports no torch: ``vae-train calibrate`` writes bundles with it too.
"""

import json
import os
import re
import shutil
from pathlib import Path

from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, FileEntry, Manifest, ManifestBody, file_sha256, seal_manifest

# Multi-line lists of numbers are folded onto one line in manifest.json: indented structure,
# compact vectors. Only lists json.dumps broke over lines match, so no string value is touched.
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]")


class PublishError(Exception):
    """The destination exists and may not be replaced."""


def staging_dir_for(out_dir: Path) -> Path:
    """A fresh empty directory beside ``out_dir`` (same filesystem, so the final rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def file_entries(directory: Path, names: list[str]) -> dict[str, FileEntry]:
    """sha256 and size of each named file in ``directory``."""
    return {
        name: FileEntry(sha256=file_sha256(directory / name), size_bytes=(directory / name).stat().st_size)
        for name in names
    }


def manifest_text(manifest: Manifest) -> str:
    """manifest.json's text: the JSON-mode dump (what the digest covers), indented, vectors on one line."""
    text = json.dumps(manifest.document(), indent=1, allow_nan=False)
    return _NUMBER_LIST.sub(lambda match: "[" + re.sub(r",\s+", ", ", match.group(1)) + "]", text) + "\n"


def write_manifest(staging: Path, body: ManifestBody) -> Manifest:
    """Checksum the graphs in ``staging``, seal ``body`` and write manifest.json.

    Args:
        staging: the bundle directory being written; it holds the graphs ``body`` names.
        body: the manifest without its seal.

    Returns:
        The sealed manifest, as written.

    Raises:
        pydantic.ValidationError: the sealed manifest breaks the schema.
    """
    files = file_entries(staging, body.graph_files())
    manifest = seal_manifest(body, files)
    (staging / MANIFEST_FILE).write_text(manifest_text(manifest), encoding="utf-8")
    return manifest


def publish(staging: Path, out_dir: Path, replace_existing: bool) -> Path:
    """Verify the staged bundle with the serving loader, then move it to ``out_dir``.

    Raises:
        BundleError: the staged bundle does not verify.
        PublishError: ``out_dir`` exists and ``replace_existing`` is false.
    """
    load_bundle(staging)
    if out_dir.exists():
        if not replace_existing:
            raise PublishError(f"{out_dir} already exists; pass --force to replace it")
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir
