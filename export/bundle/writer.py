"""Write a model bundle: the files' checksums, the sealed manifest, and an atomic publish.

The bundle is written into a staging directory beside the destination, verified with the same
loader the server uses, and only then renamed into place, so a reader never sees half a bundle.
Imports no torch: ``vae-train calibrate`` writes bundles with it too.
"""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, FileEntry, Manifest, ManifestBody, file_sha256, seal_manifest

# Multi-line lists of numbers are folded onto one line in manifest.json: indented structure,
# compact vectors. Only lists json.dumps broke over lines match, so no string value is touched.
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]")


class PublishError(Exception):
    """The destination may not be written: it exists (without force), is not a bundle, or cannot be created."""


# Entries of a directory that a force may replace: vae-train's bundle files. Anything else is the user's.
BUNDLE_SUFFIXES = (".onnx",)
# How many of the entries in the way a refusal names.
_NAMED_ENTRIES = 3


def entries_in_way(directory: Path, allowed: Callable[[Path], bool]) -> list[str]:
    """The entries of ``directory`` that ``allowed`` does not accept, sorted, folders with a trailing /."""
    return sorted(
        entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")
        for entry in directory.iterdir()
        if not allowed(entry)
    )


def describe_entries(names: list[str]) -> str:
    """``thesis.txt, data/ (2 more)``: the first few names and how many were left unnamed."""
    shown = ", ".join(names[:_NAMED_ENTRIES])
    return shown + (f" ({len(names) - _NAMED_ENTRIES} more)" if len(names) > _NAMED_ENTRIES else "")


def is_bundle_file(entry: Path) -> bool:
    """A regular file a bundle holds: manifest.json or a graph (``*.onnx``)."""
    return (
        entry.is_file()
        and not entry.is_symlink()
        and (entry.name == MANIFEST_FILE or entry.name.endswith(BUNDLE_SUFFIXES))
    )


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (as anything: a folder, a file, a link)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable_parent(out_dir: Path, flag: str = "--force") -> None:
    """A staging folder can be created beside ``out_dir`` (so that ``out_dir`` itself can be written).

    Probes the closest existing ancestor with a real, immediately removed folder: the OS's answer,
    so a root user, a read-only mount and a file in the path are all caught, without leaving anything.

    Raises:
        PublishError: an ancestor is a file, or the folder cannot be created there (with the OS reason).
    """
    ancestor = _nearest_existing(out_dir.absolute().parent)
    if not ancestor.is_dir():
        raise PublishError(f"cannot write {out_dir}: {ancestor} is a file, not a folder; choose another {_out(flag)}")
    try:
        probe = tempfile.mkdtemp(prefix=f".{out_dir.name}.probe-", dir=ancestor)
    except OSError as error:
        raise PublishError(
            f"cannot write {out_dir}: a staging folder could not be created in {ancestor} "
            f"({error.strerror or error}); choose another {_out(flag)} or make {ancestor} writable"
        ) from None
    os.rmdir(probe)


def _out(flag: str) -> str:
    """The option that names the destination, worded as the caller's ``flag`` is (CLI or API)."""
    return "out" if flag.startswith("force") else "--out"


def check_destination(
    out_dir: Path,
    replace_existing: bool,
    flag: str = "--force",
    allowed: Callable[[Path], bool] = is_bundle_file,
    what: str = "a model bundle",
    required: str | None = None,
) -> None:
    """Refuse a destination that may not be written, before any work (and again at publish).

    A destination may be replaced only when ``replace_existing`` is set and it is an empty folder
    or a bundle: a folder that holds manifest.json and nothing but bundle files (``allowed``).
    Anything else in it is the user's, and is never deleted.

    Args:
        out_dir: the bundle directory to write.
        replace_existing: whether an existing bundle may be replaced (``--force``, ``force=True``).
        flag: how the caller's user says force, for the messages.
        allowed: which entries of an existing folder a replace may delete.
        what: what a replaceable ``out_dir`` is, for the refusal.
        required: a file a non-empty folder must hold to be replaced; None: manifest.json when
            ``allowed`` is the bundle's, else nothing.

    Raises:
        PublishError: it exists without ``replace_existing``; it is a file or a symbolic link; it
            holds anything else than a bundle (the refusal names the first few entries); or its
            parent cannot be written.
    """
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        kind = "a symbolic link" if out_dir.is_symlink() else "a file"
        raise PublishError(
            f"refusing to replace {out_dir}: it is {kind}, not a folder; remove it or choose another {_out(flag)}"
        )
    if out_dir.exists():
        if not replace_existing:
            raise PublishError(f"{out_dir} already exists; pass {flag} to replace it")
        if required is None and allowed is is_bundle_file:
            required = MANIFEST_FILE
        _check_replaceable(out_dir, flag, allowed, what, required)
    check_writable_parent(out_dir, flag)


def _check_replaceable(
    out_dir: Path, flag: str, allowed: Callable[[Path], bool], what: str, required: str | None
) -> None:
    """An existing folder is empty, or holds ``required`` (if any) and only entries ``allowed`` accepts."""
    try:
        empty = not any(out_dir.iterdir())
        in_way = entries_in_way(out_dir, allowed)
    except OSError as error:
        raise PublishError(f"cannot read {out_dir} ({error.strerror or error}); choose another {_out(flag)}") from None
    if empty:
        return
    if required is not None and not (out_dir / required).is_file():
        held = f" and holds {describe_entries(in_way)}" if in_way else ""
        raise PublishError(
            f"refusing to replace {out_dir}: it is not {what} (no {required}){held}; "
            f"remove them or choose another {_out(flag)}"
        )
    if in_way and required is None:
        raise PublishError(
            f"refusing to replace {out_dir}: it is not {what}: it holds {describe_entries(in_way)}; "
            f"remove them or choose another {_out(flag)}"
        )
    if in_way:
        raise PublishError(
            f"refusing to replace {out_dir}: besides {what} it holds {describe_entries(in_way)}, which "
            f"{flag} would delete; move them away or choose another {_out(flag)}"
        )


def staging_dir_for(out_dir: Path) -> Path:
    """A fresh empty directory beside ``out_dir`` (same filesystem, so the final rename is atomic).

    Raises:
        PublishError: the folder cannot be created (an ancestor is a file, no permission, ...).
    """
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as error:
        raise PublishError(
            f"cannot write {out_dir}: a staging folder could not be created ({error.strerror or error})"
        ) from None
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


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``; an existing ``out_dir`` is renamed aside first, and deleted only
    once the new one is in place, so a failure part-way leaves the old one (or puts it back)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    aside = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(out_dir, aside)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def publish(staging: Path, out_dir: Path, replace_existing: bool, flag: str = "--force") -> Path:
    """Verify the staged bundle with the serving loader, then move it to ``out_dir``.

    The destination is checked again here, at the moment of replacing: it may have changed while
    the model trained.

    Raises:
        BundleError: the staged bundle does not verify.
        PublishError: ``out_dir`` may not be replaced (see ``check_destination``).
    """
    load_bundle(staging)
    check_destination(out_dir, replace_existing, flag)
    replace_dir(staging, out_dir)
    return out_dir
