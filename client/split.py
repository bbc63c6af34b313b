"""Inputs larger than one request may carry, sent as consecutive pieces: the plan, the seed rule, the
progress bar, and the results joined back in row order.

The seed rule (docs/client.md): a call with seed s that is split into pieces 0, 1, ... sends piece 0
with s itself and piece i >= 1 with ``piece_seed(s, i)``, the top 53 bits of the first 64-bit word
of ``numpy.random.SeedSequence(s).spawn(i + 1)[i]``. A call that fits one request is sent as before.
Without a seed, a split call draws s here (53 bits, as the server does) so that the whole call can be
replayed from the one number in its result.
"""

import dataclasses
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.results import Piece
from vae_serve.core.defaults import MAX_REPLY_BYTES, MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from tqdm import tqdm

SEED_BITS = 53  # as the server's own seeds: exact in a JSON number
_FLOAT_BYTES = 4
# Budgets per message, below the defaults of the server's --max-receive-message-bytes and
# --max-send-message-bytes (also the client's receive limit), less room for the other fields.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
REQUEST_BYTES = MAX_REQUEST_BYTES - MESSAGE_OVERHEAD_BYTES
REPLY_BYTES = MAX_REPLY_BYTES - MESSAGE_OVERHEAD_BYTES


def piece_seed(seed: int, index: int) -> int:
    """The seed that piece ``index`` of a split call with seed ``seed`` is sent with.

    Piece 0 keeps ``seed``, so the first piece is the request an unsplit call of its rows would be.
    Piece i >= 1 gets the top 53 bits of the first 64-bit word of SeedSequence(seed).spawn(i + 1)[i]:
    a hash of (seed, i), so neighbouring seeds (1, 2, 3, ...) never share pieces' noise, as
    ``seed + i`` would.
    """
    if index == 0:
        return seed
    child = np.random.SeedSequence(seed, spawn_key=(index,))  # == SeedSequence(seed).spawn(index + 1)[index]
    return int(child.generate_state(1, np.uint64)[0]) >> (64 - SEED_BITS)


def fresh_seed() -> int:
    """A random seed for a split call that gave none."""
    return secrets.randbits(SEED_BITS)


@dataclass(frozen=True)
class RowCost:
    """What one row of a request counts against the server's limits.

    Attributes:
        samples: Its share of max_row_samples (rows x samples); 0 when the rpc draws nothing.
        request_floats: float32 values it puts in the request.
        reply_floats: float32 values (or their size in bytes / 4) it puts in the reply.
    """

    samples: int
    request_floats: int
    reply_floats: int


def _budget(server_bytes: int, default_bytes: int) -> int:
    """A message budget: the server's limit (0 from a server that predates the field: the defaults')
    less room for the fields beside the tensors."""
    if not server_bytes:
        return default_bytes
    return max(1, server_bytes - min(MESSAGE_OVERHEAD_BYTES, server_bytes // 4))


def rows_per_piece(info: vae_pb2.ModelInfo, cost: RowCost, cap: int | None = None) -> int:
    """The most rows one request may carry under every limit ``info`` reports (0: no limit) and ``cap``.

    At least 1: a single row that breaks a limit (k above max_row_samples) is sent as it is, for the
    server to refuse with the reason.
    """
    bounds = [info.max_rows, cap or 0]
    if cost.samples and info.max_row_samples:
        bounds.append(info.max_row_samples // cost.samples)
    request_bytes = _budget(info.max_request_bytes, REQUEST_BYTES)
    reply_bytes = min(REPLY_BYTES, _budget(info.max_reply_bytes, REPLY_BYTES))  # also the client's own limit
    bounds.append(request_bytes // max(1, cost.request_floats * _FLOAT_BYTES))
    bounds.append(reply_bytes // max(1, cost.reply_floats * _FLOAT_BYTES))
    return max(1, min(bound for bound in bounds if bound > 0))


def plan(rows: int, per_piece: int, seed: int | None) -> tuple[list[Piece], int | None]:
    """(pieces, base seed): consecutive row ranges of at most ``per_piece`` rows, each with its seed.

    One piece (rows fit, or none at all) keeps ``seed`` as given, None included: the server picks.
    """
    if rows <= per_piece:
        return [Piece(0, rows, seed)], seed
    base = fresh_seed() if seed is None else seed
    starts = range(0, rows, per_piece)
    return [Piece(start, min(start + per_piece, rows), piece_seed(base, i)) for i, start in enumerate(starts)], base


def progress_bar(rows: int, pieces: int, enabled: bool, what: str) -> "tqdm":
    """A bar of rows sent, on stderr: only when ``enabled``, for more than one piece, on a terminal."""
    # Imported on first use: tqdm takes about 0.1 s to import, and the server's gRPC binding imports
    # this package for its enum names (client/names.py) but never draws a bar.
    from tqdm import tqdm

    show = enabled and pieces > 1 and sys.stderr.isatty()
    return tqdm(total=rows, desc=what, unit="row", file=sys.stderr, disable=not show, leave=False, dynamic_ncols=True)


def join(results: Sequence, pieces: Sequence[Piece], seed: int, rows: tuple[str, ...], draws: tuple[str, ...] = ()):
    """One result from the pieces' results, in row order.

    Args:
        results: One result dataclass per piece, all of one type.
        pieces: The pieces as sent, with the seeds their replies reported.
        seed: The call's seed (the base of the piece seeds).
        rows: Fields of arrays whose first axis is the row: concatenated on it.
        draws: Fields of draws [num_samples, n, ...]: concatenated on axis 1. None stays None.
        Every other field is the first piece's (model, version, k, threshold: the same in all).
    """

    def concatenated(field: str, axis: int) -> np.ndarray | None:
        parts = [getattr(result, field) for result in results]
        return None if parts[0] is None else np.concatenate(parts, axis=axis)

    arrays = {field: concatenated(field, 0) for field in rows} | {field: concatenated(field, 1) for field in draws}
    return dataclasses.replace(results[0], **arrays, seed=seed, pieces=tuple(pieces))


def send_in_pieces(
    rows: int,
    per_piece: int,
    seed: int | None,
    model: str | None,
    version: str | None,
    send: Callable,
    bar: Callable[[int, int], "tqdm"],
    joined_rows: tuple[str, ...],
    joined_draws: tuple[str, ...] = (),
):
    """Send ``rows`` rows as one request, or as pieces of ``per_piece`` rows; one result, in row order.

    Args:
        rows, per_piece: Rows of the input, and the most one request may carry.
        seed: The call's seed, or None (see the module docstring).
        model, version: As the caller gave them.
        send: Sends one request: (rows, a slice or None for all; seed; model; version) -> its result.
        bar: ``progress_bar`` with the rows and the number of pieces still to give.
        joined_rows, joined_draws: The result's fields to concatenate (see ``join``).

    Returns:
        The result of all rows, with ``pieces``.
    """
    pieces, base_seed = plan(rows, per_piece, seed)
    if len(pieces) == 1:
        result = send(None, seed, model, version)
        return dataclasses.replace(result, pieces=(Piece(0, rows, result.seed),))
    results, sent = [], []
    with bar(rows, len(pieces)) as progress:
        for piece in pieces:
            result = send(slice(piece.start, piece.stop), piece.seed, model, version)
            # Every piece from the version that answered the first, even if a newer one loads meanwhile.
            model, version = result.model_name, result.model_version
            results.append(result)
            sent.append(Piece(piece.start, piece.stop, result.seed))
            progress.update(piece.stop - piece.start)
    return join(results, sent, base_seed, joined_rows, joined_draws)
