"""The table of row-wise rpcs: per rpc, how its request is built, what a row costs, and how its reply
becomes a result. VaeClient sends every entry the same way (client.py: limits, splitting, the seed
rule, progress, retries and joining are written once).

A request is ``request_type(model=..., seed=..., **fields, **tensors)``: ``fields`` are the call's
scalar proto fields (``num_samples``, ``k``, ``score``, ...), ``tensors`` its row arrays by proto
field (``x``, or ``x_start``/``x_end``, ...), each cut to the piece's rows. Row costs read both; the
costs of scores come from the server's GetModelInfo (``scores``, ``default_score``), never a copy.
"""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import Message

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.errors import data_loss
from vae_serve.client.names import score_name
from vae_serve.client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    InterpolateResult,
    SampleResult,
    ScoreResult,
)
from vae_serve.client.split import RowCost
from vae_serve.client.tensors import from_tensor, to_tensor

Fields = Mapping[str, Any]
Tensors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RowRpc:
    """One row-wise rpc of vae.v1.VaeService.

    Attributes:
        label: The progress bar's label, e.g. "score".
        method: The stub's method, e.g. "ScoreAnomaly".
        request_type: Its request message.
        result: Reply -> the result dataclass of one request.
        draws_per_row: (fields, info) -> a row's share of max_row_samples; 0 when it draws nothing.
        reply_floats_per_row: (fields, info) -> float32 values (or bytes / 4) a row puts in the reply.
        joined_rows: Result fields concatenated on the row axis when a call is split.
        joined_draws: Result fields of draws [num_samples, n, ...], concatenated on axis 1.
    """

    label: str
    method: str
    request_type: type[Message]
    result: Callable[[Any], Any]
    draws_per_row: Callable[[Fields, vae_pb2.ModelInfo], int]
    reply_floats_per_row: Callable[[Fields, vae_pb2.ModelInfo], int]
    joined_rows: tuple[str, ...]
    joined_draws: tuple[str, ...] = ()

    def request(
        self, tensors: Tensors, fields: Fields, rows: slice | None, seed: int | None, model: vae_pb2.ModelRef
    ) -> Message:
        """The request for ``rows`` of ``tensors`` (None: all of them, as given)."""
        # A 0-d array cannot be sliced; it goes whole, for the server to say what is wrong.
        parts = {name: to_tensor(array if rows is None else array[rows]) for name, array in tensors.items()}
        return self.request_type(model=model, seed=seed, **fields, **parts)

    def row_cost(self, tensors: Tensors, fields: Fields, info: vae_pb2.ModelInfo) -> RowCost:
        """What one row of this call counts against the limits ``info`` reports."""
        request_floats = sum(_row_size(array) for array in tensors.values())
        return RowCost(self.draws_per_row(fields, info), request_floats, self.reply_floats_per_row(fields, info))


def rows_of(tensors: Tensors) -> int:
    """Rows of a call: 0 when its arrays disagree (one request, for the server to refuse with the reason)."""
    counts = {len(array) if array.ndim else 0 for array in tensors.values()}
    return counts.pop() if len(counts) == 1 else 0


def _row_size(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim else 1


def _provenance(reply) -> dict[str, Any]:
    return {"model_name": reply.model.name, "model_version": reply.model.version, "seed": reply.seed}


def _optional_tensor(message: Message, field: str) -> np.ndarray | None:
    return from_tensor(getattr(message, field)) if message.HasField(field) else None


def _doubles(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _optional_doubles(values) -> np.ndarray | None:
    # The server leaves the IWAE fields empty when k == 1; None says "not computed" more plainly than [].
    return _doubles(values) if len(values) else None


def _encoded(reply: vae_pb2.EncodeResponse) -> EncodeResult:
    z_samples = _optional_tensor(reply, "z_samples")
    return EncodeResult(from_tensor(reply.z_mean), from_tensor(reply.z_logvar), z_samples, **_provenance(reply))


def _decoded(reply: vae_pb2.DecodeResponse) -> DecodeResult:
    likelihood = reply.WhichOneof("params")
    if likelihood == "bernoulli":
        x_mean, x_scale = from_tensor(reply.bernoulli.probs), None
    elif likelihood == "gaussian":
        x_mean, x_scale = from_tensor(reply.gaussian.mean), from_tensor(reply.gaussian.scale)
    else:
        raise data_loss("Decode reply has no likelihood parameters")
    x_samples = _optional_tensor(reply, "x_samples")
    return DecodeResult(likelihood, x_mean, x_scale, x_samples, **_provenance(reply))


_BOUNDS = ("elbo", "reconstruction", "kl", "elbo_bits_per_dim")
_IWAE = ("iwae", "iwae_standard_error", "iwae_bits_per_dim")


def _bounds(reply: vae_pb2.ElboResponse) -> ElboResult:
    bounds = {name: _doubles(getattr(reply, name)) for name in _BOUNDS}
    iwae = {name: _optional_doubles(getattr(reply, name)) for name in _IWAE}
    return ElboResult(**bounds, **iwae, k=reply.k, **_provenance(reply))


def _scored(reply: vae_pb2.ScoreAnomalyResponse) -> ScoreResult:
    return ScoreResult(
        score=score_name(reply.score),
        scores=_doubles(reply.scores),
        percentile=_doubles(reply.percentile),
        p_value=_doubles(reply.p_value),
        is_anomaly=np.asarray(reply.is_anomaly, dtype=bool),
        threshold=reply.threshold,
        false_positive_rate=reply.false_positive_rate,
        feature_errors=_optional_tensor(reply, "feature_errors"),
        **_provenance(reply),
    )


def _interpolated(reply: vae_pb2.InterpolateResponse) -> InterpolateResult:
    x_samples = _optional_tensor(reply, "x_samples")
    return InterpolateResult(
        _doubles(reply.t), from_tensor(reply.z), from_tensor(reply.x_mean), x_samples, **_provenance(reply)
    )


def score_draws(score_type: int, info: vae_pb2.ModelInfo) -> int:
    """Posterior draws per row of ``score_type`` (0: the server's default score), as the server reports them.

    A score the server does not list (it will refuse it) counts as its costliest.
    """
    draws = {facts.score: facts.draws for facts in info.scores}
    return draws.get(score_type or info.default_score, max(draws.values(), default=1))


def _path_points(fields: Fields) -> int:
    return max(fields["steps"], 1)


ROW_RPCS: dict[str, RowRpc] = {
    rpc.label: rpc
    for rpc in (
        RowRpc(
            "encode",
            "Encode",
            vae_pb2.EncodeRequest,
            _encoded,
            lambda fields, info: fields["num_samples"],
            lambda fields, info: info.latent_dim * (2 + fields["num_samples"]),  # mean, log-variance, draws
            ("z_mean", "z_logvar"),
            ("z_samples",),
        ),
        RowRpc(
            "decode",
            "Decode",
            vae_pb2.DecodeRequest,
            _decoded,
            lambda fields, info: fields["num_samples"],
            lambda fields, info: info.num_features * (2 + fields["num_samples"]),  # mean, scale (Gaussian), draws
            ("x_mean", "x_scale"),
            ("x_samples",),
        ),
        RowRpc(
            "elbo",
            "Elbo",
            vae_pb2.ElboRequest,
            _bounds,
            lambda fields, info: max(fields["k"], 1),
            lambda fields, info: 2 * 7,  # seven doubles
            (*_BOUNDS, *_IWAE),
        ),
        RowRpc(
            "score",
            "ScoreAnomaly",
            vae_pb2.ScoreAnomalyRequest,
            _scored,
            # A score without draws still counts one sample per row on the server.
            lambda fields, info: max(score_draws(fields["score"], info), 1),
            # Three doubles and a bool, and the feature errors when asked.
            lambda fields, info: 7 + (info.num_features if fields["return_feature_errors"] else 0),
            ("scores", "percentile", "p_value", "is_anomaly", "feature_errors"),
        ),
        RowRpc(
            "interpolate",  # a row is a path: steps points, and steps x num_samples draws
            "Interpolate",
            vae_pb2.InterpolateRequest,
            _interpolated,
            lambda fields, info: _path_points(fields) * max(fields["num_samples"], 1),
            lambda fields, info: (
                _path_points(fields) * (info.latent_dim + info.num_features * (1 + fields["num_samples"]))
            ),
            ("z", "x_mean"),
            ("x_samples",),
        ),
    )
}


def sample_result(reply: vae_pb2.SampleResponse) -> SampleResult:
    """The SampleResult of a Sample reply."""
    return SampleResult(from_tensor(reply.z), from_tensor(reply.x_mean), from_tensor(reply.x), **_provenance(reply))


def stream_result(replies: list[vae_pb2.SampleResponse], n: int) -> SampleResult:
    """One SampleResult from a SampleStream's replies, rows placed by their offsets.

    Raises:
        VaeClientError: DATA_LOSS unless the replies cover rows 0..n-1 exactly once.
    """
    if not replies:
        raise data_loss("SampleStream ended without any rows")
    # gRPC keeps a stream's order, but the offsets are the contract, so place rows by them.
    replies = sorted(replies, key=lambda reply: reply.offset)
    chunks = [sample_result(reply) for reply in replies]
    next_row = 0
    for reply, chunk in zip(replies, chunks, strict=True):
        if reply.offset != next_row:
            raise data_loss(f"SampleStream chunk at offset {reply.offset}, expected {next_row}")
        next_row += len(chunk.z)
    if next_row != n:
        raise data_loss(f"SampleStream returned {next_row} rows, asked for {n}")
    rows = {name: np.concatenate([getattr(chunk, name) for chunk in chunks]) for name in ("z", "x_mean", "x")}
    return dataclasses.replace(chunks[0], **rows)
