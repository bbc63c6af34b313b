"""What ``vae-train export-triton --force`` may replace in a Triton model repository: only what it
wrote itself. A version directory ``REPO/<name>-<graph>/<N>/`` is replaced only when it is empty or
holds exactly export-triton's files (model.onnx and manifest.json, regular files, the manifest
present); a config.pbtxt only when its comment says export-triton wrote it. Anything else (a
TensorRT ``model.plan``, a hand-written config) is the user's: refused, named, never deleted.
"""

import os
from pathlib import Path

from vae_serve.core.manifest import MANIFEST_FILE
from vae_serve.export.bundle.writer import PublishError, check_destination

MODEL_FILE = "model.onnx"
# The only files of a version directory: what --force may replace.
VERSION_FILES = (MODEL_FILE, MANIFEST_FILE)
# In the comment of every config.pbtxt export-triton writes: such a config may be replaced.
WRITTEN_BY = "written by vae-train export-triton"


def is_version_file(entry: Path) -> bool:
    """What export-triton writes into a version directory: model.onnx and manifest.json, regular files."""
    return entry.is_file() and not entry.is_symlink() and entry.name in VERSION_FILES


def written_here(config: Path) -> bool:
    """Whether ``config`` (a config.pbtxt) was written by export-triton: its comment says so."""
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    comment = "".join(line.removeprefix("#") for line in text.splitlines() if line.startswith("#"))
    return "".join(WRITTEN_BY.split()) in "".join(comment.split())  # textwrap may break the comment anywhere


def check_targets(targets: list[Path]) -> None:
    """Every version directory may be written: new, empty, or one export-triton wrote (model.onnx and
    manifest.json, nothing else); and every model's config.pbtxt, replaced with each version, is
    missing or export-triton's. Checked for all models before any is written.

    Raises:
        PublishError: what is in the way, named.
    """
    for target in targets:
        what = "a version directory export-triton wrote"
        check_destination(target, True, allowed=is_version_file, what=what, required=MANIFEST_FILE)
        config = target.parent / "config.pbtxt"
        if os.path.lexists(config) and not (config.is_file() and not config.is_symlink() and written_here(config)):
            raise PublishError(
                f"refusing to replace {config}: it was not {WRITTEN_BY}; move it away, or export under another --name"
            )
