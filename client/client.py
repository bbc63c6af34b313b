"""A small typed client for the vae.v1.VaeService gRPC API: numpy in, frozen dataclasses out.

Row-wise calls (encode, decode, elbo, score, interpolate) larger than the server's per-request
limits are sent as consecutive requests and joined (client/split.py has the seed rule); calls the
server refuses as overloaded or unavailable are retried (client/retry.py). docs/client.md has both.
"""

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    InterpolateResult,
    SampleResult,
    ScoreResult,
)
from vae_serve.client.retry import DEFAULT_RETRY, RetryPolicy, channel_options
from vae_serve.client.split import RowCost, progress_bar, rows_per_piece, send_in_pieces
from vae_serve.client.tensors import from_tensor, to_tensor

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# CLI/API score names -> the proto enum; the reverse map names the score a reply says it used.
SCORE_TYPES: dict[str, int] = {  # "negative_elbo" -> SCORE_TYPE_NEGATIVE_ELBO, ... from the proto itself
    name.removeprefix("SCORE_TYPE_").lower(): value for name, value in vae_pb2.ScoreType.items() if value
}
_SCORE_NAMES = {value: name for name, value in SCORE_TYPES.items()}
# "linear" -> INTERPOLATION_PATH_LINEAR, ... likewise from the proto.
INTERPOLATION_PATHS: dict[str, int] = {
    name.removeprefix("INTERPOLATION_PATH_").lower(): value for name, value in vae_pb2.InterpolationPath.items()
}
# Posterior draws per row of each score, as vae.proto's ScoreType documents them: what a score's rows
# count against max_row_samples (tests/test_client_split.py checks the server's registry agrees).
SCORE_DRAWS: dict[str, int] = {
    "negative_elbo": 10,
    "negative_iwae": 100,
    "reconstruction_error": 0,
    "negative_reconstruction_probability": 10,
    "complexity_corrected": 100,
}


class VaeClientError(Exception):
    """A failed call: the gRPC status name (e.g. "INVALID_ARGUMENT") and the server's message.

    Attributes:
        code_name: The status name, e.g. "NOT_FOUND".
        details: The server's explanation.
        code: The original ``grpc.StatusCode``, when there was one.
    """

    def __init__(self, code_name: str, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"{code_name}: {details}")
        self.code_name = code_name
        self.details = details
        self.code = code


@contextlib.contextmanager
def _translate_rpc_errors() -> Iterator[None]:
    """Re-raise any grpc.RpcError as a VaeClientError, keeping its status code."""
    try:
        yield
    except grpc.RpcError as err:
        # A plain RpcError (not a grpc.Call) has no code(); the sync stubs always raise Calls.
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        raise VaeClientError(code.name, details or "", code) from err


def _score_name(score_type: int) -> str:
    # Proto3 enums are open: UNSPECIFIED, or a value newer than these stubs, is reported by number.
    return _SCORE_NAMES.get(score_type, f"score_type_{score_type}")


def _model_ref(model: str | None, version: str | None) -> vae_pb2.ModelRef:
    # Empty strings mean "the default model" and "its latest version" on the server.
    return vae_pb2.ModelRef(name=model or "", version=version or "")


def _optional_tensor(message: Message, field: str) -> np.ndarray | None:
    return from_tensor(getattr(message, field)) if message.HasField(field) else None


def _optional_doubles(values: Sequence[float]) -> np.ndarray | None:
    # The server leaves the IWAE fields empty when k == 1; None says "not computed" more plainly than [].
    return np.asarray(values, dtype=np.float64) if len(values) else None


def _doubles(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _rows(array: np.ndarray) -> int:
    return len(array) if array.ndim else 0


def _row_size(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim else 1


def _part(array: np.ndarray, rows: slice | None) -> np.ndarray:
    # None: the whole input, as given (a 0-d array cannot be sliced; the server says what is wrong).
    return array if rows is None else array[rows]


def _sample_result(z: np.ndarray, x_mean: np.ndarray, x: np.ndarray, reply: vae_pb2.SampleResponse) -> SampleResult:
    return SampleResult(z, x_mean, x, reply.model.name, reply.model.version, reply.seed)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (works on plaintext channels too,
    where gRPC's own call credentials are refused)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self.header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class VaeClient:
    """A synchronous client for one vae-serve server.

    Every method takes optional ``model`` and ``version`` (empty: the server's default model and its
    latest version) and raises VaeClientError for any failed call. Arrays go out as float32.

    Row-wise methods (encode, decode, elbo, score, interpolate) split an input larger than the
    server's per-request limits (GetModelInfo's max_rows, max_row_samples, and the message sizes)
    into consecutive requests, answered by one model version, and join the results in row order;
    ``result.pieces`` lists the requests and their seeds. A split call's draws differ from those of
    one request of all rows: see the seed rule in docs/client.md and ``split.piece_seed``.
    """

    def __init__(
        self,
        target: str,
        timeout_s: float = 30.0,
        tls_ca: bytes | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
        token: str | None = None,
        tls: bool = False,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        progress: bool = True,
        max_rows_per_request: int | None = None,
    ) -> None:
        """Open a channel to ``target`` ("host:port").

        Args:
            timeout_s: Deadline of each request, its retries included; a split call's requests get
                one each. A stream gets it for the whole stream.
            tls_ca: PEM CA certificates to trust (TLS); None with ``tls`` uses the system's roots.
            tls_cert, tls_key: PEM client certificate and key, for servers that require them (mTLS).
            token: Bearer token sent with every call as ``authorization: Bearer <token>``.
            tls: Use TLS even without ``tls_ca`` (a server with a publicly trusted certificate).
            retry: How RESOURCE_EXHAUSTED and UNAVAILABLE are retried (gRPC's retry policy, honouring
                the server's grpc-retry-pushback-ms); None: not at all.
            progress: Show a progress bar on stderr for split calls, when stderr is a terminal.
            max_rows_per_request: Send at most this many rows per request, even where the server
                allows more (None: the server's limits alone).

        Raises:
            ValueError: If ``max_rows_per_request`` is below 1.
        """
        if max_rows_per_request is not None and max_rows_per_request < 1:
            raise ValueError(f"max_rows_per_request: {max_rows_per_request} must be >= 1")
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        self.progress = progress
        self.max_rows_per_request = max_rows_per_request
        # GetModelInfo by (model, version) as asked: the limits that split row-wise calls.
        self._info_cache: dict[tuple[str, str], vae_pb2.ModelInfo] = {}
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            *channel_options(retry, _MAX_MESSAGE_BYTES),
        ]
        if tls or tls_ca is not None or tls_cert is not None:
            credentials = grpc.ssl_channel_credentials(tls_ca, tls_key, tls_cert)
            channel = grpc.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        self._channel = grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
        self._stub = vae_pb2_grpc.VaeServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        """Close the channel; the client is unusable afterwards."""
        self._channel.close()

    def __enter__(self) -> "VaeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status of ``service`` ("" is the whole server), e.g. "SERVING"."""
        with _translate_rpc_errors():
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout_s: float = 60.0, service: str = "") -> None:
        """Block until the server reports SERVING for ``service`` (it binds its port before loading
        models): a health Watch, waiting for the connection too.

        Raises:
            VaeClientError: DEADLINE_EXCEEDED if it is not serving within ``timeout_s``.
        """
        request = health_pb2.HealthCheckRequest(service=service)
        with _translate_rpc_errors():
            updates = self._health.Watch(request, timeout=timeout_s, wait_for_ready=True)
            try:
                for update in updates:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            finally:
                updates.cancel()

    def info(self, model: str | None = None, version: str | None = None) -> vae_pb2.ModelInfo:
        """What the model is, how good it is, and the limits the server enforces (asked afresh)."""
        request = vae_pb2.GetModelInfoRequest(model=_model_ref(model, version))
        with _translate_rpc_errors():
            info = self._stub.GetModelInfo(request, timeout=self.timeout_s)
        self._info_cache[(model or "", version or "")] = info
        return info

    def _limits(self, model: str | None, version: str | None) -> vae_pb2.ModelInfo:
        """GetModelInfo of (model, version), asked once per client: the limits are the server's
        settings, which do not change while it runs."""
        cached = self._info_cache.get((model or "", version or ""))
        return cached if cached is not None else self.info(model, version)

    def _in_pieces(
        self,
        what: str,
        rows: int,
        cost: Callable[[vae_pb2.ModelInfo], RowCost],
        seed: int | None,
        model: str | None,
        version: str | None,
        send: Callable[[slice | None, int | None, str | None, str | None], object],
        joined_rows: tuple[str, ...],
        joined_draws: tuple[str, ...] = (),
    ):
        """Send ``rows`` rows as one request or, beyond the server's limits, as consecutive pieces.

        Args:
            what: The bar's label.
            rows: Rows of the input.
            cost: What one row counts against the limits of a ModelInfo.
            seed: The call's seed, or None.
            model, version: As the caller gave them.
            send: Sends one request: (rows, or None for all; seed; model; version) -> its result.
            joined_rows, joined_draws: The result's fields to concatenate (see split.join).

        Returns:
            The result of all rows, with ``pieces``.
        """
        per_piece = rows
        if rows > 1:  # one row cannot be split: no need to ask for the limits
            info = self._limits(model, version)
            per_piece = rows_per_piece(info, cost(info), self.max_rows_per_request)
        bar = functools.partial(progress_bar, enabled=self.progress, what=what)
        return send_in_pieces(rows, per_piece, seed, model, version, send, bar, joined_rows, joined_draws)

    def encode(
        self,
        x: npt.ArrayLike,
        num_samples: int = 0,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> EncodeResult:
        """Posterior parameters of each input row of ``x`` ([n, D] or [n, *input_shape]).

        Args:
            x: The inputs.
            num_samples: If > 0, also draw this many z per row.
            seed: Seed for the draws; None lets the server pick one (returned in the result). A split
                call sends its pieces with seeds derived from it (docs/client.md).
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            z_mean and z_logvar [n, L], z_samples [num_samples, n, L] or None, and the pieces sent.

        Raises:
            VaeClientError: If a call fails.
        """
        x = np.asarray(x)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None) -> EncodeResult:
            request = vae_pb2.EncodeRequest(
                model=_model_ref(model, version), x=to_tensor(_part(x, rows)), num_samples=num_samples, seed=seed
            )
            with _translate_rpc_errors():
                reply = self._stub.Encode(request, timeout=self.timeout_s)
            return EncodeResult(
                from_tensor(reply.z_mean),
                from_tensor(reply.z_logvar),
                _optional_tensor(reply, "z_samples"),
                reply.model.name,
                reply.model.version,
                reply.seed,
            )

        def cost(info: vae_pb2.ModelInfo) -> RowCost:
            return RowCost(num_samples, _row_size(x), info.latent_dim * (2 + num_samples))

        return self._in_pieces(
            "encode", _rows(x), cost, seed, model, version, send, ("z_mean", "z_logvar"), ("z_samples",)
        )

    def decode(
        self,
        z: npt.ArrayLike,
        num_samples: int = 0,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> DecodeResult:
        """Likelihood parameters p(x|z) of each latent row of ``z`` ([n, L]).

        Args:
            z: The latents.
            num_samples: If > 0, also draw this many x per row.
            seed: Seed for the draws; None lets the server pick one. A split call sends its pieces
                with seeds derived from it (docs/client.md).
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            likelihood ("bernoulli" or "gaussian"), x_mean [n, D] (Bernoulli probabilities or Gaussian
            means), x_scale [n, D] for Gaussian models else None, x_samples [num_samples, n, D] or None,
            and the pieces sent.

        Raises:
            VaeClientError: If a call fails.
        """
        z = np.asarray(z)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None) -> DecodeResult:
            request = vae_pb2.DecodeRequest(
                model=_model_ref(model, version), z=to_tensor(_part(z, rows)), num_samples=num_samples, seed=seed
            )
            with _translate_rpc_errors():
                reply = self._stub.Decode(request, timeout=self.timeout_s)
            likelihood = reply.WhichOneof("params")
            if likelihood == "bernoulli":
                x_mean, x_scale = from_tensor(reply.bernoulli.probs), None
            elif likelihood == "gaussian":
                x_mean, x_scale = from_tensor(reply.gaussian.mean), from_tensor(reply.gaussian.scale)
            else:
                raise VaeClientError(
                    "DATA_LOSS", "Decode reply has no likelihood parameters", grpc.StatusCode.DATA_LOSS
                )
            return DecodeResult(
                likelihood,
                x_mean,
                x_scale,
                _optional_tensor(reply, "x_samples"),
                reply.model.name,
                reply.model.version,
                reply.seed,
            )

        def cost(info: vae_pb2.ModelInfo) -> RowCost:
            # Mean and scale (Gaussian) and the draws, D values each.
            return RowCost(num_samples, _row_size(z), info.num_features * (2 + num_samples))

        return self._in_pieces(
            "decode", _rows(z), cost, seed, model, version, send, ("x_mean", "x_scale"), ("x_samples",)
        )

    def sample(
        self,
        n: int,
        seed: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> SampleResult:
        """Draw ``n`` samples (z ~ N(0, temperature^2 I), decoded) in one reply.

        Args:
            n: Number of samples, >= 1 and at most the server's max_sample_n.
            seed: Seed; None lets the server pick one.
            temperature: Prior standard deviation multiplier; None means 1.
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            z [n, L], x_mean [n, D], x [n, D].

        Raises:
            VaeClientError: If the call fails.
        """
        request = vae_pb2.SampleRequest(model=_model_ref(model, version), n=n, seed=seed, temperature=temperature)
        with _translate_rpc_errors():
            reply = self._stub.Sample(request, timeout=self.timeout_s)
        return _sample_result(from_tensor(reply.z), from_tensor(reply.x_mean), from_tensor(reply.x), reply)

    def sample_stream(
        self,
        n: int,
        chunk_size: int = 0,
        seed: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> SampleResult:
        """Draw ``n`` samples through the streaming rpc and reassemble them in row order.

        The same seed gives the same values as ``sample``; the stream allows a larger ``n``.
        ``timeout_s`` bounds the whole stream, not each message.

        Args:
            n: Number of samples, >= 1 and at most the server's max_stream_sample_n.
            chunk_size: Rows per streamed message; 0 means the server's default.
            seed: Seed; None lets the server pick one.
            temperature: Prior standard deviation multiplier; None means 1.
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            z [n, L], x_mean [n, D], x [n, D].

        Raises:
            VaeClientError: If the call fails, or (DATA_LOSS) the chunks do not cover rows 0..n-1 exactly once.
        """
        request = vae_pb2.SampleRequest(
            model=_model_ref(model, version), n=n, seed=seed, temperature=temperature, chunk_size=chunk_size
        )
        with _translate_rpc_errors():
            replies = list(self._stub.SampleStream(request, timeout=self.timeout_s))
        if not replies:
            raise VaeClientError("DATA_LOSS", "SampleStream ended without any rows", grpc.StatusCode.DATA_LOSS)
        # gRPC keeps a stream's order, but the offsets are the contract, so place rows by them.
        replies.sort(key=lambda reply: reply.offset)
        chunks = [(from_tensor(reply.z), from_tensor(reply.x_mean), from_tensor(reply.x)) for reply in replies]
        next_row = 0
        for reply, (z, _, _) in zip(replies, chunks, strict=True):
            if reply.offset != next_row:
                raise VaeClientError(
                    "DATA_LOSS",
                    f"SampleStream chunk at offset {reply.offset}, expected {next_row}",
                    grpc.StatusCode.DATA_LOSS,
                )
            next_row += len(z)
        if next_row != n:
            raise VaeClientError(
                "DATA_LOSS", f"SampleStream returned {next_row} rows, asked for {n}", grpc.StatusCode.DATA_LOSS
            )
        z, x_mean, x = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        return _sample_result(z, x_mean, x, replies[0])

    def elbo(
        self,
        x: npt.ArrayLike,
        k: int = 1,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> ElboResult:
        """ELBO (reconstruction - KL) per input row and, with k > 1, the IWAE bound; all in nats.

        Args:
            x: The inputs, [n, D] or [n, *input_shape].
            k: Importance samples per example; k > 1 adds the IWAE bound and its standard error.
            seed: Seed; None lets the server pick one. A split call sends its pieces with seeds
                derived from it (docs/client.md).
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            Per-example arrays [n]; the iwae fields are None when k == 1. And the pieces sent.

        Raises:
            VaeClientError: If a call fails.
        """
        x = np.asarray(x)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None) -> ElboResult:
            request = vae_pb2.ElboRequest(model=_model_ref(model, version), x=to_tensor(_part(x, rows)), k=k, seed=seed)
            with _translate_rpc_errors():
                reply = self._stub.Elbo(request, timeout=self.timeout_s)
            return ElboResult(
                elbo=_doubles(reply.elbo),
                reconstruction=_doubles(reply.reconstruction),
                kl=_doubles(reply.kl),
                elbo_bits_per_dim=_doubles(reply.elbo_bits_per_dim),
                iwae=_optional_doubles(reply.iwae),
                iwae_standard_error=_optional_doubles(reply.iwae_standard_error),
                iwae_bits_per_dim=_optional_doubles(reply.iwae_bits_per_dim),
                k=reply.k,
                model_name=reply.model.name,
                model_version=reply.model.version,
                seed=reply.seed,
            )

        def cost(info: vae_pb2.ModelInfo) -> RowCost:
            return RowCost(max(k, 1), _row_size(x), 2 * 7)  # seven doubles per row

        bounds = ("elbo", "reconstruction", "kl", "elbo_bits_per_dim", "iwae", "iwae_standard_error")
        return self._in_pieces("elbo", _rows(x), cost, seed, model, version, send, (*bounds, "iwae_bits_per_dim"))

    def score(
        self,
        x: npt.ArrayLike,
        score: str = "reconstruction_error",
        false_positive_rate: float | None = None,
        threshold: float | None = None,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
        feature_errors: bool = False,
    ) -> ScoreResult:
        """Anomaly score per input row, its calibration percentile and p-value, and the decision.

        Args:
            x: The inputs, [n, D] or [n, *input_shape].
            score: A name of SCORE_TYPES; the default, reconstruction_error, is the best measured.
            false_positive_rate: Flag scores above the calibration quantile at 1 - this, in (0, 1).
            threshold: Flag scores above this value. At most one of the two; neither: the server's default.
            seed: Seed; None lets the server pick one. A split call sends its pieces with seeds
                derived from it (docs/client.md).
            model: Model name, or None for the default.
            version: Model version, or None for the latest.
            feature_errors: Also return each feature's squared reconstruction error [n, D].

        Returns:
            scores, percentile, p_value, is_anomaly [n], the threshold and false-positive rate used,
            feature_errors [n, D] when asked (else None), and the pieces sent.

        Raises:
            ValueError: If ``score`` is unknown or both thresholds are given.
            VaeClientError: If a call fails.
        """
        if score not in SCORE_TYPES:
            raise ValueError(f"unknown score {score!r}; expected one of {', '.join(SCORE_TYPES)}")
        if false_positive_rate is not None and threshold is not None:
            raise ValueError("give false_positive_rate or threshold, not both")
        x = np.asarray(x)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None) -> ScoreResult:
            request = vae_pb2.ScoreAnomalyRequest(
                model=_model_ref(model, version),
                x=to_tensor(_part(x, rows)),
                score=SCORE_TYPES[score],
                false_positive_rate=false_positive_rate,
                score_threshold=threshold,
                seed=seed,
                return_feature_errors=feature_errors,
            )
            with _translate_rpc_errors():
                reply = self._stub.ScoreAnomaly(request, timeout=self.timeout_s)
            return ScoreResult(
                score=_score_name(reply.score),
                scores=_doubles(reply.scores),
                percentile=_doubles(reply.percentile),
                p_value=_doubles(reply.p_value),
                is_anomaly=np.asarray(reply.is_anomaly, dtype=bool),
                threshold=reply.threshold,
                false_positive_rate=reply.false_positive_rate,
                model_name=reply.model.name,
                model_version=reply.model.version,
                seed=reply.seed,
                feature_errors=from_tensor(reply.feature_errors) if reply.HasField("feature_errors") else None,
            )

        def cost(info: vae_pb2.ModelInfo) -> RowCost:
            # A score without draws still counts one sample per row on the server. Reply: 3 doubles
            # and a bool per row, and the feature errors when asked.
            draws = SCORE_DRAWS.get(score, max(SCORE_DRAWS.values()))
            return RowCost(max(draws, 1), _row_size(x), 7 + (info.num_features if feature_errors else 0))

        fields = ("scores", "percentile", "p_value", "is_anomaly", "feature_errors")
        return self._in_pieces("score", _rows(x), cost, seed, model, version, send, fields)

    def interpolate(
        self,
        start: npt.ArrayLike,
        end: npt.ArrayLike,
        steps: int = 8,
        path: str = "linear",
        latent: bool = False,
        num_samples: int = 0,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> InterpolateResult:
        """Decode ``steps`` points on the path from each row of ``start`` to the same row of ``end``.

        Args:
            start, end: The ends of n paths: inputs [n, D] or [n, *input_shape] (each encoded to its
                posterior mean), or with ``latent`` latent codes [n, L].
            steps: Points per path, both ends included; at least 2.
            path: A name of INTERPOLATION_PATHS: "linear" or "spherical" (slerp).
            latent: The ends are latent codes rather than inputs.
            num_samples: Also draw this many x per point.
            seed: Seed of the draws; None lets the server pick one. A call with more paths than one
                request may carry sends its pieces with seeds derived from it (docs/client.md).
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            t [steps], z [n, steps, L], x_mean [n, steps, D], x_samples [num_samples, n, steps, D] or
            None, and the pieces sent (rows are paths).

        Raises:
            ValueError: If ``path`` is unknown.
            VaeClientError: If a call fails.
        """
        if path not in INTERPOLATION_PATHS:
            raise ValueError(f"unknown path {path!r}; expected one of {', '.join(INTERPOLATION_PATHS)}")
        start, end = np.asarray(start), np.asarray(end)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None) -> InterpolateResult:
            ends = {
                "z_start" if latent else "x_start": to_tensor(_part(start, rows)),
                "z_end" if latent else "x_end": to_tensor(_part(end, rows)),
            }
            request = vae_pb2.InterpolateRequest(
                model=_model_ref(model, version),
                steps=steps,
                path=INTERPOLATION_PATHS[path],
                num_samples=num_samples,
                seed=seed,
                **ends,
            )
            with _translate_rpc_errors():
                reply = self._stub.Interpolate(request, timeout=self.timeout_s)
            return InterpolateResult(
                _doubles(reply.t),
                from_tensor(reply.z),
                from_tensor(reply.x_mean),
                _optional_tensor(reply, "x_samples"),
                reply.model.name,
                reply.model.version,
                reply.seed,
            )

        def cost(info: vae_pb2.ModelInfo) -> RowCost:
            # A path counts steps points, and steps x num_samples draws, against max_row_samples.
            points = max(steps, 1)
            reply = points * (info.latent_dim + info.num_features * (1 + num_samples))
            return RowCost(points * max(num_samples, 1), _row_size(start) + _row_size(end), reply)

        # Ends of different lengths go as one request, for the server to refuse with the reason.
        paths = _rows(start) if _rows(start) == _rows(end) else 0
        return self._in_pieces("interpolate", paths, cost, seed, model, version, send, ("z", "x_mean"), ("x_samples",))
