"""The decision log: a sampled record of each scored row (request and trace id, model, score, p-value,
threshold, decision, seed, time, and the inputs only if asked), sent to a JSON Lines file or to an
HTTP sink as CloudEvents (service/monitor/sinks.py).

The request path only samples and appends a reference to its event to a bounded queue: ``offer``
never waits and never formats a record. One writer task drains the queue in batches. When the sink
is slower than the traffic the queue fills and new records are dropped and counted
(``vae_decision_log_dropped_total{reason="queue_full"}``); no request ever waits for the sink.
"""

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections import deque
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from yarl import URL

from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.monitor.sinks import POST_TIMEOUT_S, FileSink, HttpSink, Row
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)
DROP_REASONS = ("queue_full", "sink_error", "shutdown")
FIX = "give a file path in an existing, writable directory, or an http:// or https:// URL"


class DecisionLogError(ValueError):
    """``--decision-log`` names no usable destination; the one-line message says why and what to give."""


def _check_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError as error:
        raise DecisionLogError(f"--decision-log: not a valid URL ({error}); {FIX}") from None
    if url.scheme not in ("http", "https"):
        raise DecisionLogError(f"--decision-log: unsupported URL scheme '{url.scheme}://'; {FIX}")
    if not url.host:
        raise DecisionLogError(f"--decision-log: the URL names no host; {FIX}")
    return value


def _open_file(value: str) -> int:
    path = Path(value).expanduser()
    if path.is_dir():
        raise DecisionLogError(
            f"--decision-log {path} is a directory; give a file in it, e.g. {path / 'decisions.jsonl'}"
        )
    parent = path.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise DecisionLogError(f"--decision-log {path}: the directory {parent} {problem}; {FIX}")
    # O_NONBLOCK: a named pipe nobody reads fails at once (ENXIO) instead of hanging the start.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        reason = "a named pipe no process reads" if error.errno == errno.ENXIO else error.strerror
        raise DecisionLogError(f"--decision-log {path}: cannot open it for appending ({reason}); {FIX}") from None
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # the writer thread may wait
    if stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        raise DecisionLogError(f"--decision-log {path} is a socket; {FIX}")
    return fd


def open_sink(value: str, with_inputs: bool, post_timeout_s: float = POST_TIMEOUT_S) -> FileSink | HttpSink:
    """The sink ``--decision-log`` names, checked: a URL must be http(s) with a host; a file is opened
    (created if absent) for appending now, so a bad path stops the server before it serves.

    Args:
        value: the setting, a file path or an http:// or https:// URL.
        with_inputs: records carry the rows' inputs.
        post_timeout_s: an HTTP sink's limit on one POST.

    Returns:
        The sink, not yet started.

    Raises:
        DecisionLogError: the value names no usable destination.
    """
    if not value.strip():
        raise DecisionLogError(f"--decision-log is empty; {FIX}, or leave it unset for no log")
    if "://" in value:
        return HttpSink(_check_url(value), with_inputs, post_timeout_s)
    return FileSink(_open_file(value), str(Path(value).expanduser()), with_inputs)


class DecisionLog:
    """A bounded queue of sampled scored rows and the task that hands them to a sink.

    ``offer`` runs on the event loop's thread (the score operation's), as do ``start`` and ``close``.
    Records waiting or being written count against ``capacity_records``, so the queue gauge, the
    records written and the records dropped always add up to the rows offered.
    """

    def __init__(
        self,
        sink: FileSink | HttpSink,
        registry: CollectorRegistry,
        sample: float = 1.0,
        with_inputs: bool = False,
        capacity_records: int = 10_000,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"decision log sample {sample} must be in (0, 1]")
        self._sink = sink
        self._sample = sample
        self._with_inputs = with_inputs
        self._capacity = capacity_records
        # The sample only bounds the log's volume: which rows it keeps is independent of their
        # content, so no result depends on the draw and it need not be reproducible. Seeded by the
        # OS, so the processes of --processes do not all keep the same rows of their calls.
        self._rng = np.random.default_rng()
        self._queue: deque[tuple[ScoredEvent, np.ndarray]] = deque()
        self._pending = 0  # rows queued or being written
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.records = Counter("vae_decision_log_records", "Decision-log records the sink accepted.", registry=registry)
        self.dropped = Counter(
            "vae_decision_log_dropped",
            "Decision-log records lost, by reason: queue_full (the sink is slower than the traffic), "
            "sink_error (the sink failed or refused them), shutdown (still queued when the grace ran out).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)  # every series exists from the start, at 0
        self.queue_records = Gauge(
            "vae_decision_log_queue_records",
            "Decision-log records waiting for the sink or being written.",
            registry=registry,
        )
        self.queue_records.set_function(lambda: self._pending)

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: CollectorRegistry, post_timeout_s: float = POST_TIMEOUT_S
    ) -> "DecisionLog | None":
        """The decision log ``settings`` ask for, its metrics on ``registry``; None when it is off.

        Raises:
            DecisionLogError: ``settings.decision_log`` names no usable destination.
        """
        if settings.decision_log is None:
            return None
        sink = open_sink(settings.decision_log, settings.decision_log_inputs, post_timeout_s)
        log.info("decision log: %r, sampling %g of scored rows", sink, settings.decision_log_sample)
        return cls(
            sink,
            registry,
            sample=settings.decision_log_sample,
            with_inputs=settings.decision_log_inputs,
            capacity_records=settings.decision_log_queue_records,
        )

    @property
    def wants_inputs(self) -> bool:
        """Whether records carry inputs: the score operation then puts them in its ``ScoredEvent``."""
        return self._with_inputs

    def offer(self, event: ScoredEvent) -> None:
        """Sample ``event``'s rows and queue them; what does not fit is dropped and counted. Never waits.
        A no-op once ``close`` has begun."""
        if self._closing:
            return
        rows = len(event.scores)
        chosen = np.arange(rows) if self._sample == 1.0 else np.flatnonzero(self._rng.random(rows) < self._sample)
        room = self._capacity - self._pending
        if len(chosen) > room:
            self.dropped.labels("queue_full").inc(len(chosen) - room)
            chosen = chosen[:room]
        if len(chosen):
            self._queue.append((event, chosen))
            self._pending += len(chosen)
            self._wake.set()

    async def start(self) -> None:
        """Open the sink and start the writer task."""
        await self._sink.open()
        self._task = asyncio.create_task(self._write_all(), name="vae-decision-log")

    async def close(self, grace_s: float) -> None:
        """Stop taking records, give the writer up to ``grace_s`` to deliver the queue, then close the sink.
        Records still undelivered are dropped and counted (reason ``shutdown``)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._pending:
            log.warning("decision log: %d records not delivered within the %g s grace", self._pending, grace_s)
            self.dropped.labels("shutdown").inc(self._pending)
        self._pending = 0
        self._queue.clear()
        await self._sink.close()

    def _take(self, limit: int) -> list[Row]:
        batch: list[Row] = []
        while self._queue and len(batch) < limit:
            event, rows = self._queue[0]
            taken, rest = rows[: limit - len(batch)], rows[limit - len(batch) :]
            batch.extend((event, int(row)) for row in taken)
            if len(rest):
                self._queue[0] = (event, rest)
            else:
                self._queue.popleft()
        return batch

    async def _write_all(self) -> None:
        while True:
            batch = self._take(self._sink.batch_records)
            if not batch:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                written = await self._sink.write(batch)
            except Exception:  # a bug in a sink must not stop the log for good
                log.exception("decision log: writing to %r failed", self._sink)
                written = 0
            self._pending -= len(batch)
            self.records.inc(written)
            if written < len(batch):
                self.dropped.labels("sink_error").inc(len(batch) - written)
