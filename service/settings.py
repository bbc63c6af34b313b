"""Every server setting in one typed class, the one source of ``vae-serve``'s flags, help, environment
variables and the README's settings table (service/cli_settings.py derives them). Each can be set by
a ``VAE_<NAME>`` environment variable (e.g. ``VAE_PORT=8001``) or by the matching flag, which wins.

A field's docstring is its help text. Its flag is ``--field-name`` (underscores as dashes, a
trailing ``_s`` unit suffix dropped: ``grace_s`` is ``--grace``); a field that needs something
else says so in ``json_schema_extra``:

- ``{"cli": "env-only"}``: no flag, the environment variable only (secrets stay out of process
  listings);
- ``{"cli": "hidden"}``: a flag for internal use, left out of ``--help`` and the README;
- ``{"off_flag": "--no-x"}``: an optional field whose None means off also gets this flag.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vae_serve.core.defaults import DEFAULT_PORT, MAX_REPLY_BYTES, MAX_REQUEST_BYTES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAE_", frozen=True, extra="forbid", use_attribute_docstrings=True)

    bundle: Path | None = None
    """One bundle directory to serve. Exactly one of ``--bundle`` and ``--model-repository`` is required."""

    model_repository: Path | None = None
    """A directory of ``<name>/<version>/`` bundles: every version is loaded, the latest is the default,
    and new versions are picked up live (see ``--repository-poll``)."""

    # None (only from Python): load the repository once at start.
    repository_poll_s: float | None = Field(default=10.0, gt=0)
    """With ``--model-repository``: seconds between scans for new or removed versions. A new version is
    verified, then swapped in under traffic without a restart; a bad one is refused and logged, and the
    old one keeps serving."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds. Use 0.0.0.0 in a container."""

    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """gRPC port; 0 binds a free port. The bound address is printed on stdout as ``vae-serve listening
    on HOST:PORT``."""

    metrics_port: int | None = Field(default=9090, ge=0, le=65535, json_schema_extra={"off_flag": "--no-metrics"})
    """Prometheus /metrics port; 0 binds a free port, printed on stdout as ``vae-serve metrics on URL``.
    ``--no-metrics`` serves no metrics."""

    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Open Inference Protocol REST/JSON port (KServe v2 and Triton's HTTP clients, curl); 0 binds a free
    port, printed on stdout as ``vae-serve http on URL``. Unset: no HTTP. The same models, batchers,
    limits, tokens, TLS files and metrics as gRPC; ``/v2/health/live`` and ``/v2/health/ready`` stay
    open to probes."""

    ui: bool = False
    """Serve the model explorer page at ``/ui/`` on the REST port (needs ``--http-port``): the model card,
    samples, interpolation, the latent manifold map, scoring an upload and the monitoring state, all
    through the HTTP APIs with the user's token (docs/ui.md). The page's files need no token."""

    http_max_request_line_bytes: int = Field(default=16384, ge=64)
    """REST: longest request line (method, path and query, version), in bytes; a longer one is answered
    414 with a JSON error and the connection is closed."""

    http_max_header_bytes: int = Field(default=8192, ge=64)
    """REST: longest header line (name and value), in bytes; a longer one is answered 431. With
    ``--http-max-headers`` it bounds a request's whole head."""

    http_max_headers: int = Field(default=100, ge=1)
    """REST: most header lines in one request; more are answered 431."""

    http_header_timeout_s: float = Field(default=10.0, gt=0)
    """REST: a request's line and headers must arrive in full within this many seconds of the connection
    opening, or of the request's first byte on a kept-alive connection; a slower client (slowloris) is
    disconnected and counted in vae_http_connections_closed_total."""

    http_keepalive_timeout_s: float = Field(default=60.0, gt=0)
    """REST: a kept-alive connection with no request for this many seconds is closed."""

    http_max_connections: int = Field(default=1000, ge=1)
    """REST: most open connections; a new one beyond it is answered 503 (JSON) and closed, and counted
    in vae_http_connections_closed_total."""

    metrics_host: str | None = None
    """Address of the metrics endpoint (unset: the ``--host`` address)."""

    processes: int = Field(default=1, ge=1)
    """Server processes sharing the gRPC port through SO_REUSEPORT, to use more than one core. The
    kernel spreads connections over them, so clients need several connections (or several clients).
    Each loads the models and batches on its own; process i (from 0) serves metrics on
    ``--metrics-port`` + i (each on a free port when that is 0)."""

    reuse_port: bool = Field(default=False, json_schema_extra={"cli": "hidden"})
    """Bind the gRPC port with SO_REUSEPORT (set for the processes of ``--processes`` > 1). Off
    otherwise, so that a second server on a taken port fails instead of silently sharing it."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """ONNX Runtime device: cpu; cuda (fails at start, saying why, if ONNX Runtime has no working CUDA
    provider); auto (CUDA if available, else CPU). The providers in use are logged and in GetModelInfo."""

    intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime threads per graph run (0: ORT's default). One thread per run lets concurrent
    requests use the cores instead of fighting over them."""

    worker_threads: int = Field(default=4, ge=1)
    """Threads that run inference, so the event loop never blocks on ONNX Runtime."""

    tls_cert: Path | None = None
    """PEM certificate chain of the server. With ``--tls-key`` the gRPC port speaks TLS only; files
    changed on disk are used from the next handshake on, without a restart."""

    tls_key: Path | None = None
    """PEM private key of ``--tls-cert``."""

    tls_client_ca: Path | None = None
    """PEM CA certificates: clients must present a certificate signed by one (mutual TLS)."""

    auth_tokens_file: Path | None = None
    """File of accepted bearer tokens, one per line ('#' comments). Every VaeService and Open Inference
    Protocol call then needs ``authorization: Bearer <token>``, else UNAUTHENTICATED; health and
    reflection stay open. Tokens are compared in constant time and never logged."""

    auth_tokens: SecretStr | None = Field(default=None, json_schema_extra={"cli": "env-only"})
    """Accepted bearer tokens, comma-separated, as in ``--auth-tokens-file``. Environment only: no flag,
    so tokens stay out of process listings."""

    max_concurrent_rpcs: int | None = Field(default=1000, ge=1)
    """Calls handled at once; gRPC answers RESOURCE_EXHAUSTED beyond it, before any work."""

    keepalive_time_s: float = Field(default=60.0, gt=0)
    """The server pings a connection idle this long, to find peers that vanished."""

    keepalive_timeout_s: float = Field(default=20.0, gt=0)
    """A ping unanswered this long closes the connection."""

    min_client_ping_interval_s: float = Field(default=10.0, ge=0)
    """Clients may ping at most this often; faster pingers get GOAWAY (gRPC's ping-flood defence)."""

    max_connection_age_s: float | None = Field(default=300.0, gt=0)
    """Connections are closed gracefully after this age, so clients re-resolve DNS and spread over
    new pods (client-side round_robin behind a headless Service)."""

    max_connection_age_grace_s: float = Field(default=30.0, ge=0)
    """Calls still running on an aged connection get this long to finish."""

    max_connection_idle_s: float | None = Field(default=600.0, gt=0)
    """Connections with no call for this long are closed."""

    reflection: bool = True
    """Serve gRPC server reflection (grpcurl and similar tools rely on it)."""

    grace_s: float = Field(default=10.0, ge=0)
    """On SIGTERM or SIGINT, how long in-flight calls may take to finish before they are cancelled."""

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Level of the server log on stderr: debug, info, warning (or warn), error or critical (any case)."""

    max_batch_rows: int = Field(default=8192, ge=1)
    """Dynamic batching: most rows the graphs process in one batch (an Elbo request of n rows and k
    samples counts n x k). Concurrent requests of one kind and model are stacked up to this; 1
    turns batching off. A single request above it still runs, alone."""

    max_batch_wait_s: float = Field(default=0.002, ge=0.0)
    """Longest a batch may wait for more requests after its first arrived, in seconds. 0: run as soon
    as a runner is free; requests arriving meanwhile still form the next batch."""

    batch_wait: Literal["adaptive", "fixed"] = "adaptive"
    """adaptive: a batch waits (up to ``--max-batch-wait``) only for as many requests as there are
    concurrent callers to expect (the recent peak of unanswered requests), so a lone client never
    waits and 16 concurrent ones share a batch; fixed: always the full wait."""

    batch_runners: int = Field(default=1, ge=1)
    """Batches of one kind and model that may run at once. One is fastest when the process has one
    core (measured in docs/benchmarks.md): runs then queue up and batches grow; use ``--processes``
    to use more cores."""

    inline_max_rows: int = Field(default=16, ge=0)
    """A request of at most this many rows x samples that finds its batcher idle, with no queue and no
    concurrent callers to expect, runs at once on the event loop instead of on an inference thread:
    a lone caller's small request skips the thread hand-off (measured in docs/benchmarks.md). 0: every
    batch runs on the inference threads."""

    max_queue_rows: int = Field(default=1_048_576, ge=1)
    """Rows x samples that may wait per kind and model; beyond it requests get RESOURCE_EXHAUSTED at
    once."""

    max_rows: int = Field(default=1024, ge=1)
    """Most rows (examples or latents) in one request."""

    max_k: int = Field(default=1000, ge=1)
    """Most importance samples per example (Elbo k, Encode/Decode num_samples), and most points per
    Interpolate path (steps)."""

    max_row_samples: int = Field(default=262_144, ge=1)
    """Most rows x samples one request may make the decoder process (Elbo, Encode, Decode, scores;
    Interpolate: paths x steps, and that times num_samples)."""

    max_sample_n: int = Field(default=4096, ge=1)
    """Most samples in one unary Sample reply; also the largest SampleStream chunk."""

    max_stream_sample_n: int = Field(default=1_000_000, ge=1)
    """Most samples in one SampleStream call."""

    default_chunk_size: int = Field(default=1024, ge=1)
    """Rows per SampleStream message when the request leaves chunk_size at 0."""

    max_receive_message_bytes: int = Field(default=MAX_REQUEST_BYTES, ge=1024)
    """Largest request message, in bytes; gRPC answers larger ones RESOURCE_EXHAUSTED before they
    reach the service."""

    max_send_message_bytes: int = Field(default=MAX_REPLY_BYTES, ge=1024)
    """Largest reply message the server sends, in bytes."""

    monitor_window_rows: int | None = Field(default=2000, ge=20, json_schema_extra={"off_flag": "--no-monitor"})
    """Score monitoring: the drift test compares the latest this-many scored rows of each model version
    and score with that score's calibration (docs/monitoring.md). ``--no-monitor``: no drift test, no
    p-value histograms and no flag-rate series."""

    monitor_step_rows: int = Field(default=200, ge=1)
    """Score monitoring: the drift test runs again after this many new rows, off the request path."""

    monitor_alpha: float = Field(default=0.001, gt=0.0, lt=1.0)
    """Score monitoring: the significance of the drift and flag-rate tests; a test alarms when its
    p-value is below it (the chance of a false alarm per test on undrifted data, at most)."""

    decision_log: str | None = None
    """A record of each scored row (request and trace id, model, score, p-value, threshold, decision,
    seed, time): a file path (JSON Lines, appended) or an http:// or https:// URL (CloudEvents in
    binary mode, as KServe's payload logger sends). Unset: no log."""

    decision_log_sample: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of scored rows the decision log records."""

    decision_log_inputs: bool = False
    """Put each row's input values in its decision-log record too."""

    decision_log_queue_records: int = Field(default=10_000, ge=1)
    """Records that may wait for the decision-log sink; when it is slower than the traffic, new records
    are dropped and counted (vae_decision_log_dropped_total), and no request ever waits for it."""

    @field_validator(
        "bundle",
        "model_repository",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "auth_tokens_file",
        "decision_log",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value):
        # An image that bakes in VAE_BUNDLE is switched to a mounted repository with VAE_BUNDLE=.
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value):
        if not isinstance(value, str):
            return value
        return "warning" if value.lower() == "warn" else value.lower()  # logging's alias too

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both --tls-cert and --tls-key (VAE_TLS_CERT, VAE_TLS_KEY), or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        return self

    @model_validator(mode="after")
    def _ui_needs_http(self) -> "Settings":
        if self.ui and self.http_port is None:
            raise ValueError("--ui (VAE_UI) serves the page on the REST port: set --http-port (VAE_HTTP_PORT) too")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> "Settings":
        if (self.bundle is None) == (self.model_repository is None):
            raise ValueError("set exactly one of --bundle / VAE_BUNDLE and --model-repository / VAE_MODEL_REPOSITORY")
        return self
