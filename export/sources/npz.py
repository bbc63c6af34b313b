"""``npz:PATH``: one array of a numpy ``.npz`` archive (``numpy.savez``): the only one, or ``--key NAME``;
``--labels PATH`` as for ``npy:PATH``.

An .npz is a zip archive of .npy members. The chosen member's header is read and checked against
the member's size, and the member's size against the archive's, before any data is read: a forged
header that declares more rows than the member holds is refused by name, as for ``npy:PATH``,
instead of numpy allocating what the header asks for.
"""

import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from vae_serve.export.sources.base import DataError, SourceData, SourceOptions
from vae_serve.export.sources.npy import array_source, check_header, load_array

MEMBER_SUFFIX = ".npy"  # numpy.savez stores the array "x" as the member "x.npy"
# Deflate expands at most ~1032-fold (RFC 1951's longest match per bit); a member whose declared
# size exceeds that for its compressed bytes is damaged or forged.
MAX_DEFLATE_RATIO = 1032
SAVEZ_HINT = "write it with numpy.savez or numpy.savez_compressed"
# What a damaged archive or member raises while it is read: zip structure, CRC, inflate, npy header.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)


def load(location: str, options: SourceOptions) -> SourceData:
    """``npz:PATH``: the ``--key`` array (default: the only one), with optional ``--labels`` (.npy).

    Raises:
        DataError: the file is missing or not an .npz archive; it holds several arrays and no
            ``--key`` picks one, or none named ``--key``; the array is damaged, forged, holds
            objects, or is not numeric rows of finite numbers.
    """
    path = Path(location)
    values, key = load_member(path, options.key)
    labels = None if options.labels is None else load_array(options.labels, "labels")
    return array_source(values, labels, f"{path} [{key}]", options.labels, "npz")


def load_member(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    """(the array, its key) of an .npz archive: ``key``'s, or the only one's when ``key`` is None."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = _pick_member(path, archive, key)
            chosen = info.filename[: -len(MEMBER_SUFFIX)]
            _check_member(path, chosen, archive, info)
            with archive.open(info) as stream:
                return npy_format.read_array(stream, allow_pickle=False), chosen
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; npz:PATH takes an .npz file written by numpy.savez") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not an .npz file; npz:PATH takes a file written by numpy.savez") from None
    except MemoryError:
        raise DataError(f"{path}: its array does not fit in memory; use fewer rows") from None
    except READ_ERRORS as error:
        raise DataError(f"{path}: not a readable .npz file ({error}); {SAVEZ_HINT}") from None
    except OSError as error:
        raise DataError(
            f"{path}: cannot be read ({error.strerror or error}); check the path and its permissions"
        ) from None


def _pick_member(path: Path, archive: zipfile.ZipFile, key: str | None) -> zipfile.ZipInfo:
    """The member of ``key``, or the only array; refused with the keys the archive holds."""
    members = {info.filename[: -len(MEMBER_SUFFIX)]: info for info in archive.infolist()}
    members = {name: info for name, info in members.items() if info.filename.endswith(MEMBER_SUFFIX)}
    keys = ", ".join(sorted(members)) or "none"
    if key is None and len(members) == 1:
        return next(iter(members.values()))
    if key is None and not members:
        raise DataError(f"{path}: holds no arrays; {SAVEZ_HINT}")
    if key is None:
        raise DataError(f"{path}: holds {len(members)} arrays ({keys}); pick one with --key NAME")
    if key not in members:
        raise DataError(f"{path}: has no array {key!r}; its arrays are {keys}")
    return members[key]


def _check_member(path: Path, key: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The member's header against its size, and its size against the archive's bytes."""
    archive_bytes = path.stat().st_size
    stored = info.compress_type == zipfile.ZIP_STORED
    too_large = info.file_size > (info.compress_size if stored else info.compress_size * MAX_DEFLATE_RATIO)
    if info.compress_size > archive_bytes or too_large:
        raise DataError(
            f"{path} [{key}]: the archive says it holds {info.file_size:,} bytes in {info.compress_size:,}, which "
            f"cannot be; the file is damaged or forged: {SAVEZ_HINT}"
        )
    with archive.open(info) as stream:
        version = npy_format.read_magic(stream)
        # Version 3.0 differs from 2.0 only in the header's text encoding (utf-8), which these read alike.
        reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = reader(stream)
        check_header(tuple(shape), dtype, info.file_size - stream.tell(), f"{path} [{key}]", "values")
