"""The data plane: what every protocol adapter (VaeService, the Open Inference Protocol) calls.

One object owns the models being served and their atomic swap on reload, the dynamic batchers (one
per model version and kind of work, created when the version comes, retired when it goes: they
finish the calls that already hold the version and then hold nothing; closed when the server
stops), the per-request limits, and ``resolve`` / ``run``. A request's walk: adapter ->
``DataPlane.run`` -> its batcher -> the inference threads -> ``core.work`` -> ``core.bounds`` /
``core.scores`` -> ``core.runtime`` -> ONNX Runtime, and back the same way.

Observation is handed in: the server's ``Observer`` (service/observe/observer.py) gets the models
served and gone, the examples and scores; each batcher gets its ``BatchObserver``, and each model
served the graph-run hook, so the plane and the core hold no observation of their own.

Score monitoring is handed in too: the ``Monitor`` (service/monitor/, None with ``--no-monitor``)
and the decision log (None without ``--decision-log``) each get every answered score call's rows
(``watch``); the monitor forgets a version when it goes.
"""

import functools
import logging
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vae_serve.core.bundle import Bundle
from vae_serve.core.errors import NotReady
from vae_serve.core.runtime import OnnxVae
from vae_serve.core.work import WORK_KINDS
from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.observe.metrics import model_label
from vae_serve.service.observe.observer import Observer
from vae_serve.service.plane.batching import Calls, DynamicBatcher, in_executor
from vae_serve.service.plane.limits import Limits
from vae_serve.service.plane.registry import ModelRegistry
from vae_serve.service.plane.rows import RowFormat, input_format, latent_format
from vae_serve.service.settings import Settings

if TYPE_CHECKING:  # the decision log's HTTP sink brings aiohttp, which the plane never imports
    from vae_serve.service.monitor.decisions import DecisionLog
    from vae_serve.service.monitor.monitor import Monitor

log = logging.getLogger(__name__)
NOT_LOADED = "the server is still loading and verifying its models; retry shortly"


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One loaded model version and its batchers, by kind of work."""

    bundle: Bundle
    batchers: dict[str, DynamicBatcher]
    inputs: RowFormat  # what its input rows and latent codes must be, worked out once
    latents: RowFormat

    @property
    def label(self) -> str:
        return model_label(self.bundle.manifest.name, self.bundle.manifest.version)


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        executor: Executor,
        monitor: "Monitor | None" = None,
        decisions: "DecisionLog | None" = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.executor = executor
        self.monitor = monitor
        self.decisions = decisions
        self.watching = monitor is not None or decisions is not None  # whether score calls make events
        self.wants_inputs = decisions is not None and decisions.wants_inputs
        self.limits = Limits.from_settings(settings)
        self.registry: ModelRegistry | None = None  # None until every bundle passed verification
        self._served: dict[tuple[str, str], ServedModel] = {}
        # Unloaded versions that calls still hold (a stream, Interpolate's second step): reached by
        # the drain; each drops out once the last call holding it is answered.
        self._retired: weakref.WeakSet[ServedModel] = weakref.WeakSet()
        self._calls = Calls()  # calls in ``run``, on any batcher: a lone call may run inline

    @property
    def ready(self) -> bool:
        return self.registry is not None

    def load(self, registry: ModelRegistry) -> None:
        """Start serving a verified registry (at start-up)."""
        self._install(registry)

    def swap(self, models: dict[str, dict[str, Bundle]]) -> None:
        """Serve ``models`` from now on, in one step: new versions get batchers; versions that are
        gone no longer resolve, their batchers retire and their metric series are removed."""
        self._install(replace(self.registry, models=models))

    def _install(self, registry: ModelRegistry) -> None:
        wanted = {(bundle.manifest.name, bundle.manifest.version): bundle for bundle in registry.bundles()}
        served = {key: model for key, model in self._served.items() if wanted.get(key) is model.bundle}
        for key, bundle in wanted.items():
            if key not in served:
                served[key] = self._serve(bundle, registry.providers)
        for key, model in self._served.items():
            if served.get(key) is not model:
                self._retire(model)
        self._served, self.registry = served, registry

    def _serve(self, bundle: Bundle, providers: list[str]) -> ServedModel:
        manifest = bundle.manifest
        label = model_label(manifest.name, manifest.version)
        vae = bundle.vae.observed(self.observer.graph_span)  # graph runs traced when tracing is on
        batchers = {kind: self._batcher(vae, kind, label) for kind in WORK_KINDS}
        self.observer.model_served(manifest.name, manifest.version, manifest.likelihood.name, providers)
        return ServedModel(bundle, batchers, input_format(bundle.manifest), latent_format(bundle.manifest))

    def _batcher(self, vae: OnnxVae, kind: str, label: str) -> DynamicBatcher:
        settings = self.settings
        run = functools.partial(WORK_KINDS[kind], vae)
        return DynamicBatcher(
            in_executor(self.executor, run),
            max_batch_cost=settings.max_batch_rows,
            max_batch_wait_s=settings.max_batch_wait_s,
            max_queue_cost=settings.max_queue_rows,
            concurrency=settings.batch_runners,
            adaptive_wait=settings.batch_wait == "adaptive",
            observer=self.observer.batch(kind, label),
            run_inline=run,
            inline_max_cost=settings.inline_max_rows,
            calls=self._calls,
        )

    def _retire(self, model: ServedModel) -> None:
        for batcher in model.batchers.values():
            batcher.retire()
        self._retired.add(model)
        self.observer.model_gone(model.bundle.manifest.name, model.bundle.manifest.version, list(model.batchers))
        if self.monitor is not None:
            self.monitor.forget(model.bundle.manifest.name, model.bundle.manifest.version)
        log.info("unloaded %s: its batchers finish the calls that hold it", model.label)

    def resolve(self, name: str, version: str) -> ServedModel:
        """The version a request names; empty fields mean the default model and its latest version."""
        if self.registry is None:
            raise NotReady(NOT_LOADED)
        bundle = self.registry.resolve(name, version)
        return self._served[(bundle.manifest.name, bundle.manifest.version)]

    def versions(self, name: str) -> list[str]:
        return self.registry.versions(name)

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime execution providers the models run on."""
        return self.registry.providers

    def models(self) -> dict[str, dict]:
        """What is served now, name -> version -> bundle: a copy, for a reload to build on."""
        return {name: dict(versions) for name, versions in self.registry.models.items()}

    def count_scored(self, model: ServedModel, scored: int, anomalies: int) -> None:
        """Rows a score call scored, and how many of them it flagged, in the model's series."""
        self.observer.scored(model.label, scored, anomalies)

    def watch(self, event: ScoredEvent) -> None:
        """An answered score call's rows, for the monitor and the decision log; never waits."""
        if self.monitor is not None:
            self.monitor.record(event)
        if self.decisions is not None:
            self.decisions.offer(event)

    async def run(self, model: ServedModel, item: Any, method: str, timeout_s: float | None, count: bool = True) -> Any:
        """Queue one request's work (a ``core.work`` item) with its batcher and wait for the result.

        ``count``: add the item's rows to the examples metric of ``method`` (a call of several steps
        counts one of them). Raises NotReady once the server is stopping.
        """
        self._calls.waiting += 1
        try:
            result = await model.batchers[item.kind].submit(item, item.cost, timeout_s)
        finally:
            self._calls.waiting -= 1
        if count:
            self.observer.examples(method, item.rows)
        return result

    def _batchers(self) -> list[DynamicBatcher]:
        """Every batcher with calls to answer: those of the served versions and of retired ones."""
        return [batcher for model in [*self._served.values(), *self._retired] for batcher in model.batchers.values()]

    def abandon_waiting(self, reason: str) -> int:
        """Answer every call waiting on a batch with UNAVAILABLE ``reason``; returns how many."""
        return sum(batcher.abandon(NotReady(reason)) for batcher in self._batchers())

    def close(self) -> None:
        """At the end of a drain: every batcher refuses new work."""
        for batcher in self._batchers():
            batcher.close()
