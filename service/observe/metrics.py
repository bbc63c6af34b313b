"""Every Prometheus metric of the server, built on an injected registry (tests get a fresh one)."""

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Rows per batch: powers of 4 from a single row to the largest configurable batches.
BATCH_ROWS_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
BATCH_REQUESTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Request latency: 0.5 ms (a cached small call) to 30 s (a large IWAE batch).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def model_label(name: str, version: str) -> str:
    """The ``model`` label of per-version series: ``name:version``."""
    return f"{name}:{version}"


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[tuple, object] = {}
        self.registry = registry
        self.requests = Counter(
            "vae_requests",
            "Finished requests by rpc method and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "vae_request_duration_seconds",
            "Time from a request's arrival to its reply, by rpc method.",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.examples = Counter(
            "vae_examples",
            "Rows (examples, latents or samples) processed, by rpc method.",
            ["method"],
            registry=registry,
        )
        self.in_flight = Gauge("vae_requests_in_flight", "Requests being handled now.", ["method"], registry=registry)
        self.model = Info(
            "vae_model", "Models being served, by name and version.", ["name", "version"], registry=registry
        )
        self.serving = Gauge("vae_serving", "1 while the server reports SERVING, 0 otherwise.", registry=registry)
        self.batch_rows = Histogram(
            "vae_batch_rows",
            "Rows the graphs process per batch, by batch kind.",
            ["kind"],
            buckets=BATCH_ROWS_BUCKETS,
            registry=registry,
        )
        self.batch_requests = Histogram(
            "vae_batch_requests",
            "Requests per batch, by batch kind.",
            ["kind"],
            buckets=BATCH_REQUESTS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "vae_queue_wait_seconds",
            "Time a request waited for its batch to start, by batch kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue_rows = Gauge(
            "vae_queue_rows", "Rows waiting for a batch, by batch kind and model.", ["kind", "model"], registry=registry
        )
        self.queue_limit_rows = Gauge(
            "vae_queue_limit_rows",
            "Rows that may wait per batch kind and model before RESOURCE_EXHAUSTED (max_queue_rows).",
            registry=registry,
        )
        self.scored = Counter(
            "vae_scored_examples", "Examples ScoreAnomaly scored, by model name:version.", ["model"], registry=registry
        )
        self.anomalies = Counter(
            "vae_anomalies", "Examples ScoreAnomaly flagged as anomalous, by model.", ["model"], registry=registry
        )
        self.reloads = Counter(
            "vae_model_reloads",
            "New model versions found in the repository, by result (loaded, refused).",
            ["result"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "vae_auth_failures",
            "Calls refused UNAUTHENTICATED, by rpc method and reason (missing, malformed, wrong).",
            ["method", "reason"],
            registry=registry,
        )
        self.malformed = Counter(
            "vae_malformed_requests",
            "Requests whose bytes did not parse as the rpc's request message (answered INVALID_ARGUMENT, "
            "also counted in vae_requests_total), by rpc method; method http: REST requests that are not valid "
            "HTTP/1.1 (answered 4xx before any route).",
            ["method"],
            registry=registry,
        )
        self.http_connections = Gauge("vae_http_connections", "Open REST connections.", registry=registry)
        self.http_connections_closed = Counter(
            "vae_http_connections_closed",
            "REST connections the server closed to protect itself, by reason (connection_limit: refused "
            "beyond --http-max-connections; header_timeout: a request's head came slower than "
            "--http-header-timeout).",
            ["reason"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            "vae_batch_duration_seconds",
            "Run time of one batch (ONNX Runtime and numpy), by batch kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    def series(self, metric, *labels: str):
        """``metric.labels(*labels)``, looked up once: ``labels()`` takes a lock and builds a key on
        every call. Only for series that are never removed (per method, per status), not per model."""
        key = (metric, labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def forget_model(self, name: str, version: str, kinds: list[str]) -> None:
        """Remove the series of a model version that is no longer served."""
        label = model_label(name, version)
        for metric, labels in [(self.model, (name, version)), *((self.queue_rows, (kind, label)) for kind in kinds)]:
            with contextlib.suppress(KeyError):  # never set: nothing to remove
                metric.remove(*labels)
