"""The observer: metrics and tracing in one object, built by the server and handed down.

The server builds one ``Observer`` from its ``ServerMetrics`` and its ``Tracer`` and hands it to the
data plane. The plane hands each batcher its ``BatchObserver`` (``Observer.batch``: the batch, queue
and run-time series of its kind and model, and the tracer with the span attributes of its batches),
hands the models it serves the graph-run hook (``Observer.graph_span``), and reports models served
and gone, examples and scores here. Nothing in this room imports the plane: the arrows point down,
from the plane to these interface types.
"""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.observe.tracing import OFF, Tracer


@dataclass
class BatchObserver:
    """What one batcher reports: hooks that receive plain numbers, and the tracing of its batches."""

    on_batch: Callable[[int, int], None] = lambda requests, cost: None  # a batch starts
    on_wait: Callable[[float], None] = lambda seconds: None  # one item's queue wait
    on_run: Callable[[float], None] = lambda seconds: None  # one batch's run time
    on_queue: Callable[[int], None] = lambda cost: None  # queued cost changed
    tracer: Tracer = OFF
    attributes: Mapping[str, str] = field(default_factory=dict)  # on each of its "batch run" spans


class Observer:
    """Metrics and tracing for the plane, its batchers and the graph runs: one object, injected."""

    def __init__(self, metrics: ServerMetrics, tracer: Tracer = OFF) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @property
    def graph_span(self) -> Callable[[str, int], AbstractContextManager] | None:
        """The hook for ``core.runtime`` graph runs (``OnnxVae.observed``); None when tracing is off,
        so an untraced graph run costs one test of None."""
        return self.tracer.graph_span if self.tracer.enabled else None

    def batch(self, kind: str, model: str) -> BatchObserver:
        """The observer of the batcher for one batch kind of one model (``name:version``)."""
        metrics = self.metrics
        batch_requests, batch_rows = metrics.batch_requests.labels(kind), metrics.batch_rows.labels(kind)

        def on_batch(requests: int, rows: int) -> None:
            batch_requests.observe(requests)
            batch_rows.observe(rows)

        return BatchObserver(
            on_batch=on_batch,
            on_wait=metrics.queue_wait.labels(kind).observe,
            on_run=metrics.batch_duration.labels(kind).observe,
            on_queue=metrics.queue_rows.labels(kind, model).set,
            tracer=self.tracer,
            attributes={"vae.batch.kind": kind, "vae.model": model},
        )

    def model_served(self, name: str, version: str, likelihood: str, providers: list[str]) -> None:
        """A model version is served from now on (the ``vae_model`` info series)."""
        self.metrics.model.labels(name, version).info({"likelihood": likelihood, "providers": ",".join(providers)})

    def model_gone(self, name: str, version: str, kinds: list[str]) -> None:
        """A model version is no longer served: its series go."""
        self.metrics.forget_model(name, version, kinds)

    def examples(self, method: str, rows: int) -> None:
        """Rows a call of ``method`` had processed."""
        self.metrics.series(self.metrics.examples, method).inc(rows)

    def scored(self, model: str, scored: int, anomalies: int) -> None:
        """Rows a score call scored on ``model`` (``name:version``), and how many it flagged."""
        self.metrics.scored.labels(model).inc(scored)
        self.metrics.anomalies.labels(model).inc(anomalies)
