"""Triton's statistics extension, recorded per OIP model version (``<bundle>-<part>``, version).

Only the OIP's ModelInfer calls are counted, over gRPC and REST alike, as Triton counts its own
inference calls: VaeService calls that share their batches are not, though they fill those batches
(a batch's size is every row it ran). What each field holds, after Triton's definitions:
- ``inference_count``: rows of the successful calls; ``execution_count``: batches run that held at
  least one of them (several calls in one batch count one execution);
- ``success`` / ``fail``: each call once, with its time from the plane's receipt of the decoded
  request to its result or error (a call naming an unknown model or version has no model to count
  under and is not counted);
- ``queue``: a successful call's wait from reaching its batcher to its batch's start (a lone call
  run inline waits one turn of the event loop); ``compute_input``: checking its input and laying out
  its rows; ``compute_infer``: the run of the batch it was in, the batch's stacking and splitting
  of rows included; ``compute_output``: converting the outputs asked for;
- ``batch_stats``: per batch size (rows), the executions and their run time (``compute_infer``);
  their ``compute_input`` and ``compute_output`` count the same executions with no time of their
  own, since a batch's stacking and splitting run inside its ``compute_infer``;
- ``last_inference``: when the last call ended, in milliseconds since the epoch (0: none yet).
No response cache and no decoupled models: ``cache_hit`` and ``cache_miss`` stay zero,
``response_stats`` and ``memory_usage`` empty. The counts live as long as the version is served.

The batcher's side (``RunTimes``, ``timing``, ``stamp``) lives here too: a caller that wants its
times sets ``timing`` to a ``RunTimes`` before it submits, and the batcher fills it in when the
call's batch succeeds. A caller that does not ask costs the batcher one context-variable read, and
batches form exactly as without it. (One module, so an OIP call walks no further than a VaeService
call: tests/test_request_path.py.)
"""

import contextvars
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Batch numbers, process-wide, so that batches of two batchers (a version reloaded under the same
# name) never share one: a statistics reader counts each batch once by its number.
_BATCH_NUMBERS = itertools.count(1)


@dataclass(slots=True)
class RunTimes:
    """Where one call's time went, on the batcher's clock (seconds); filled in when its batch succeeded."""

    submitted_at: float = 0.0  # the call reached the batcher
    started_at: float = 0.0  # its batch began to run (inline: the call ran alone)
    ended_at: float = 0.0  # its batch's results were back
    batch: int = 0  # the batch's number, unique in the process (0: not run)
    batch_rows: int = 0  # rows of every item in the batch (an item's ``rows``, else its cost)


# Set by a caller that wants its times: the batcher fills in the RunTimes it finds here when the
# call is submitted. Context-scoped, so concurrent calls never see each other's.
timing: contextvars.ContextVar[RunTimes | None] = contextvars.ContextVar("timing", default=None)


def rows_of(item: Any, cost: int) -> int:
    """The rows an item carries (``core.work`` items name them), else its cost."""
    return getattr(item, "rows", cost)


def stamp(times: list[RunTimes | None], started_at: float, ended_at: float, batch_rows: int) -> None:
    """Fill in the times of the calls of one batch that asked (None: a call that did not), under one
    new batch number."""
    batch = next(_BATCH_NUMBERS)
    for run in times:
        if run is not None:
            run.started_at, run.ended_at, run.batch, run.batch_rows = started_at, ended_at, batch, batch_rows


# Calls of one batch are answered together, so a batch counts once if its number is remembered
# across a few hundred later batches: far more than can hold calls still being answered.
RECENT_BATCHES = 256
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class CallTimes:
    """One successful call's times as the plane measured them: its own steps, in nanoseconds, and
    the batcher's ``RunTimes`` (seconds on the batcher's clock)."""

    total_ns: int
    input_ns: int
    output_ns: int
    run: RunTimes


@dataclass
class Duration:
    """Triton's StatisticDuration: how many times, and the nanoseconds they took in all."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(0, ns)

    def document(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VersionStatistics:
    """The cumulative statistics of one OIP model version."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)  # batch size (rows) -> executions and run time
    recent: dict[int, None] = field(default_factory=dict)  # batch numbers counted, oldest first

    def succeeded(self, rows: int, times: CallTimes, now_ms: int) -> None:
        run = times.run
        run_ns = _ns(run.ended_at - run.started_at)
        self.last_inference_ms = now_ms
        self.inference_count += rows
        self.success.add(times.total_ns)
        self.queue.add(_ns(run.started_at - run.submitted_at))
        self.compute_input.add(times.input_ns)
        self.compute_infer.add(run_ns)
        self.compute_output.add(times.output_ns)
        if run.batch not in self.recent:  # the first of its batch's calls to be answered
            self.recent[run.batch] = None
            if len(self.recent) > RECENT_BATCHES:
                del self.recent[next(iter(self.recent))]
            self.execution_count += 1
            self.batches.setdefault(run.batch_rows, Duration()).add(run_ns)

    def failed(self, total_ns: int, now_ms: int) -> None:
        self.last_inference_ms = now_ms
        self.fail.add(total_ns)

    def document(self, name: str, version: str) -> dict:
        """Triton's ``$model_stat`` JSON object (and the fields of its ModelStatistics message)."""
        no_time = Duration()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.document(),
                "fail": self.fail.document(),
                "queue": self.queue.document(),
                "compute_input": self.compute_input.document(),
                "compute_infer": self.compute_infer.document(),
                "compute_output": self.compute_output.document(),
                "cache_hit": no_time.document(),
                "cache_miss": no_time.document(),
            },
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": run.count, "ns": 0},
                    "compute_infer": run.document(),
                    "compute_output": {"count": run.count, "ns": 0},
                }
                for size, run in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


def _ns(seconds: float) -> int:
    return max(0, round(seconds * NS_PER_S))


class InferenceStatistics:
    """The statistics of every OIP model version, recorded on the event loop (no locks needed).

    ``wall_clock_ms``: the time ``last_inference`` reports (milliseconds since the epoch).
    """

    def __init__(self, wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.wall_clock_ms = wall_clock_ms
        self._versions: dict[tuple[str, str], VersionStatistics] = {}

    def _of(self, name: str, version: str) -> VersionStatistics:
        key = (name, version)
        if (found := self._versions.get(key)) is None:
            found = self._versions[key] = VersionStatistics()
        return found

    def succeeded(self, name: str, version: str, rows: int, times: CallTimes) -> None:
        """A ModelInfer call of ``rows`` rows on OIP model ``name`` (``<bundle>-<part>``), ``version``, answered."""
        self._of(name, version).succeeded(rows, times, self.wall_clock_ms())

    def failed(self, name: str, version: str, total_ns: int) -> None:
        """A ModelInfer call on a model version that exists, refused or failed after ``total_ns``."""
        self._of(name, version).failed(total_ns, self.wall_clock_ms())

    def documents(self, models: list[tuple[str, str]]) -> list[dict]:
        """Triton's ``$model_stat`` objects of ``models`` ((name, version) pairs, in that order);
        one never called has zero counts."""
        return [self._versions.get(key, VersionStatistics()).document(*key) for key in models]

    def keep_only(self, models: list[tuple[str, str]]) -> None:
        """Forget the statistics of every version not in ``models`` (those unloaded): they end with
        their version, as Triton's do."""
        served = set(models)
        for key in [key for key in self._versions if key not in served]:
            del self._versions[key]
