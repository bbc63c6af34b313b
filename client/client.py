"""A small typed client for the vae.v1.VaeService gRPC API: numpy in, frozen dataclasses out.

Row-wise calls (encode, decode, elbo, score, interpolate) are entries of one table (client/rpcs.py)
and go through one path here: larger than the server's per-request limits, they are sent as
consecutive requests and joined (client/split.py has the seed rule); calls the server refuses as
overloaded or unavailable are retried (client/retry.py). docs/client.md has both.
"""

import functools

import numpy as np
import numpy.typing as npt

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.connection import Connection, model_ref
from vae_serve.client.errors import VaeClientError, translate_rpc_errors
from vae_serve.client.names import INTERPOLATION_PATHS, SCORE_TYPES
from vae_serve.client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    InterpolateResult,
    SampleResult,
    ScoreResult,
)
from vae_serve.client.retry import DEFAULT_RETRY, RetryPolicy
from vae_serve.client.rpcs import ROW_RPCS, Fields, Tensors, rows_of, sample_result, stream_result
from vae_serve.client.split import progress_bar, rows_per_piece, send_in_pieces

__all__ = ["INTERPOLATION_PATHS", "SCORE_TYPES", "VaeClient", "VaeClientError"]


class VaeClient(Connection):
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
        super().__init__(target, timeout_s, retry, tls, tls_ca, tls_cert, tls_key, token)
        self.progress = progress
        self.max_rows_per_request = max_rows_per_request

    def _call_rows(
        self, label: str, tensors: Tensors, fields: Fields, seed: int | None, model: str | None, version: str | None
    ):
        """Send the row-wise rpc ``label`` of ROW_RPCS as one request or, beyond the server's limits,
        as consecutive pieces; the result of all rows, with ``pieces``.

        Args:
            label: Its key in ROW_RPCS.
            tensors: Row arrays by request field; cut to each piece's rows.
            fields: The request's other fields, the same in every piece.
            seed, model, version: As the caller gave them (split.send_in_pieces derives the pieces').
        """
        rpc = ROW_RPCS[label]
        method = getattr(self._stub, rpc.method)

        def send(rows: slice | None, seed: int | None, model: str | None, version: str | None):
            request = rpc.request(tensors, fields, rows, seed, model_ref(model, version))
            with translate_rpc_errors():
                return rpc.result(method(request, timeout=self.timeout_s))

        rows = per_piece = rows_of(tensors)
        if rows > 1:  # one row cannot be split: no need to ask for the limits
            info = self._cached_info(model, version)
            per_piece = rows_per_piece(info, rpc.row_cost(tensors, fields, info), self.max_rows_per_request)
        bar = functools.partial(progress_bar, enabled=self.progress, what=rpc.label)
        return send_in_pieces(rows, per_piece, seed, model, version, send, bar, rpc.joined_rows, rpc.joined_draws)

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
        return self._call_rows("encode", {"x": np.asarray(x)}, {"num_samples": num_samples}, seed, model, version)

    def decode(
        self,
        z: npt.ArrayLike,
        num_samples: int = 0,
        seed: int | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> DecodeResult:
        """Likelihood parameters p(x|z) of each latent row of ``z`` [n, L].

        Args:
            z: The latent codes.
            num_samples: If > 0, also draw this many x per row.
            seed: As for ``encode``.
            model: Model name, or None for the default.
            version: Model version, or None for the latest.

        Returns:
            likelihood ("bernoulli" or "gaussian"), x_mean [n, D] (Bernoulli probabilities or Gaussian
            means), x_scale [n, D] for Gaussian models else None, x_samples [num_samples, n, D] or None,
            and the pieces sent.

        Raises:
            VaeClientError: If a call fails.
        """
        return self._call_rows("decode", {"z": np.asarray(z)}, {"num_samples": num_samples}, seed, model, version)

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
        request = vae_pb2.SampleRequest(model=model_ref(model, version), n=n, seed=seed, temperature=temperature)
        with translate_rpc_errors():
            return sample_result(self._stub.Sample(request, timeout=self.timeout_s))

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
            seed, temperature, model, version: As for ``sample``.

        Returns:
            z [n, L], x_mean [n, D], x [n, D].

        Raises:
            VaeClientError: If the call fails, or (DATA_LOSS) the chunks do not cover rows 0..n-1 exactly once.
        """
        request = vae_pb2.SampleRequest(
            model=model_ref(model, version), n=n, seed=seed, temperature=temperature, chunk_size=chunk_size
        )
        with translate_rpc_errors():
            replies = list(self._stub.SampleStream(request, timeout=self.timeout_s))
        return stream_result(replies, n)

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
            seed, model, version: As for ``encode``.

        Returns:
            Per-example arrays [n]; the iwae fields are None when k == 1. And the pieces sent.

        Raises:
            VaeClientError: If a call fails.
        """
        return self._call_rows("elbo", {"x": np.asarray(x)}, {"k": k}, seed, model, version)

    def score(
        self,
        x: npt.ArrayLike,
        score: str | None = None,
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
            score: A name of SCORE_TYPES; None: the model's default score (GetModelInfo's
                default_score: its bundle's choice, else reconstruction_error), named in the result.
            false_positive_rate: Flag scores above the calibration quantile at 1 - this, in (0, 1).
            threshold: Flag scores above this value. At most one of the two; neither: the server's default.
            seed, model, version: As for ``encode``.
            feature_errors: Also return each feature's squared reconstruction error [n, D].

        Returns:
            scores, percentile, p_value, is_anomaly [n], the threshold and false-positive rate used,
            feature_errors [n, D] when asked (else None), and the pieces sent.

        Raises:
            ValueError: If ``score`` is unknown or both thresholds are given.
            VaeClientError: If a call fails.
        """
        if score is not None and score not in SCORE_TYPES:
            raise ValueError(f"unknown score {score!r}; expected one of {', '.join(SCORE_TYPES)}")
        if false_positive_rate is not None and threshold is not None:
            raise ValueError("give false_positive_rate or threshold, not both")
        fields = {
            "score": vae_pb2.SCORE_TYPE_UNSPECIFIED if score is None else SCORE_TYPES[score],
            "false_positive_rate": false_positive_rate,
            "score_threshold": threshold,
            "return_feature_errors": feature_errors,
        }
        return self._call_rows("score", {"x": np.asarray(x)}, fields, seed, model, version)

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
            model, version: As for ``encode``.

        Returns:
            t [steps], z [n, steps, L], x_mean [n, steps, D], x_samples [num_samples, n, steps, D] or
            None, and the pieces sent (rows are paths).

        Raises:
            ValueError: If ``path`` is unknown.
            VaeClientError: If a call fails.
        """
        if path not in INTERPOLATION_PATHS:
            raise ValueError(f"unknown path {path!r}; expected one of {', '.join(INTERPOLATION_PATHS)}")
        # Ends of different lengths go as one request, for the server to refuse with the reason.
        ends = {"z_start" if latent else "x_start": np.asarray(start), "z_end" if latent else "x_end": np.asarray(end)}
        fields = {"steps": steps, "path": INTERPOLATION_PATHS[path], "num_samples": num_samples}
        return self._call_rows("interpolate", ends, fields, seed, model, version)

    def monitoring(self, model: str = "", version: str = "") -> vae_pb2.MonitoringResponse:
        """The server's score monitoring: per model version and score, the drift test of its latest
        p-values against the calibration and each promised false-positive rate's flag rate.

        Args:
            model: Model name; "" for every model the server has scored rows of.
            version: Model version; "" for every version of ``model``.

        Returns:
            The MonitoringResponse: ``enabled`` (False, with no entries, on a server run with
            --no-monitor), ``alpha``, ``step_rows``, and one ScoreMonitor per model version and score.

        Raises:
            VaeClientError: NOT_FOUND for a model or version the server does not hold, or any failed call.
        """
        request = vae_pb2.GetMonitoringRequest(model=model_ref(model, version))
        with translate_rpc_errors():
            return self._stub.GetMonitoring(request, timeout=self.timeout_s)
