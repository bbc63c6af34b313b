"""Every Prometheus metric of the server, built on an injected registry (tests get a fresh one)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Request latency: 0.5 ms (a cached small call) to 30 s (a large IWAE batch).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.inference_duration = Histogram(
            "vae_inference_duration_seconds",
            "Time spent computing (ONNX Runtime and numpy) per request, by rpc method.",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge("vae_requests_in_flight", "Requests being handled now.", ["method"], registry=registry)
        self.model = Info(
            "vae_model", "Models being served, by name and version.", ["name", "version"], registry=registry
        )
        self.serving = Gauge("vae_serving", "1 while the server reports SERVING, 0 otherwise.", registry=registry)
