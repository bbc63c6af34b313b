"""The dynamic batcher: concurrent requests of one kind are stacked and run as one batch.

Contract (after Ray Serve's early ``_BatchQueue``):
- ``run_batch`` always receives at least one item and must return exactly one result per item,
  in order; otherwise every caller of that batch gets the error. A result that is an exception
  instance is raised to its own caller alone (one bad row must not fail its neighbours).
- A batch closes when its items' cost (rows the graphs will process) reaches ``max_batch_cost``,
  or ``max_batch_wait_s`` after its first item arrived, whichever is first. While all runners are
  busy, arrivals keep accumulating, so load alone grows batches even with a zero wait.
- ``adaptive_wait``: a batch also closes as soon as it holds as many items as there are callers to
  expect (the recent peak of unanswered requests seen at arrivals, decaying with a 50 ms half-life,
  less those already in a running batch). A lone client is never kept waiting for companions that
  cannot come, because its next request waits for this reply; sixteen concurrent clients fill a
  batch instead of trickling into batches of one or two, each paying the per-run overhead.
  ``max_batch_wait_s`` stays the bound.
- Admission is bounded by cost: the work accepted and not yet answered (queued or running) never
  exceeds ``max_queue_cost``; a request that would overflow it is rejected at once
  (``Overloaded``), never left to block. So N calls sent at once against a bound of Q calls' cost
  see exactly N - Q rejections, however the batches happen to form. A request alone above
  ``max_batch_cost`` still runs, alone.
- A request whose deadline passed while queued is answered ``DeadlineExpired`` and never run; a
  cancelled request is dropped.
- ``retire()`` (its model version was unloaded): calls that already hold the version still submit
  and run (a stream's next chunk, Interpolate's second step), the queue is no longer reported, and
  the collecting task ends whenever the queue is empty, so an unloaded version leaves nothing behind
  once its last call is answered.
- ``run_inline`` (optional, the same work run synchronously): a request of cost at most
  ``inline_max_cost`` that arrives with nothing queued, no batch running and no companions expected
  (the adaptive peak is one caller, and ``calls``, every call waiting on any of the server's
  batchers, counts this one alone) runs at once in the caller's own coroutine, on the event loop:
  a lone small request then skips the collector, the thread hand-off and the wake-ups back, which
  are most of its latency. Its result is the same; it counts as a batch of one.
- ``close()`` (the server is stopping): new requests are refused with ``NotReady``; what was
  accepted still runs, then the collecting task ends.
- Observation is handed in (``observer``, a ``service.observe.observer.BatchObserver``): batch
  sizes, queue waits, run times and the queued cost go to its hooks, and with its tracer on, a
  traced caller's "queue wait" span runs from its submit to its batch's start, and each batch,
  inline ones included, gets a "batch run" span linked to the calls it serves (the observer's
  ``attributes`` name its kind and model), current while it runs: the inference thread runs in a
  copy of the batch's context, so graph runs become its children.
- A caller that sets ``statistics.timing`` before it submits gets its times filled in when its batch
  succeeds (service/plane/statistics.py); batches form exactly as without it.
"""

import asyncio
import contextlib
import contextvars
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from vae_serve.core.errors import DeadlineExpired, NotReady, Overloaded
from vae_serve.service.observe.observer import BatchObserver
from vae_serve.service.observe.tracing import Queued, running
from vae_serve.service.plane.statistics import RunTimes, rows_of, stamp, timing

CALLERS_HALF_LIFE_S = 0.05  # the expected-callers peak halves over this time without a higher one


@dataclass(eq=False)  # identity: items may hold arrays
class _Pending:
    item: Any
    cost: int
    deadline: float | None  # on the batcher's clock
    enqueued_at: float
    future: asyncio.Future = field(repr=False)
    trace: Queued | None = field(default=None, repr=False)  # None: not traced
    times: RunTimes | None = field(default=None, repr=False)  # None: the caller did not ask


@dataclass
class Calls:
    """The calls waiting on any of a server's batchers, counted by their owner (the data plane)."""

    waiting: int = 0


def in_executor(executor: Executor, run: Callable[[list], list]) -> Callable[[list], Awaitable[list]]:
    """A ``run_batch`` that runs the synchronous ``run`` on ``executor``'s threads: ONNX Runtime
    releases the GIL there, so the event loop never blocks on a model.

    The thread hands its result straight to a future of the loop (one ``call_soon_threadsafe``),
    not through ``run_in_executor``'s chained pair of futures, which cost more per batch. It runs in
    a copy of the awaiting task's context, as ``asyncio.to_thread`` does: the batch's span is current.
    """

    async def run_batch(items: list) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def work() -> None:
            try:
                outcome, failed = run(items), False
            except BaseException as error:  # handed to the awaiting batch, which answers its callers
                outcome, failed = error, True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, outcome, failed)

        submitted = executor.submit(contextvars.copy_context().run, work)
        # A drain shuts the executor down with cancel_futures: work that never started must still
        # answer its batch, or the batch would wait for ever.
        submitted.add_done_callback(functools.partial(_cancel_if_dropped, loop, future))
        try:
            return await future
        except asyncio.CancelledError:
            submitted.cancel()  # the batch was abandoned: do not start the work if not yet started
            raise

    return run_batch


def _cancel_if_dropped(loop: asyncio.AbstractEventLoop, future: asyncio.Future, submitted) -> None:
    if submitted.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(future.cancel)


def _settle(future: asyncio.Future, outcome: Any, failed: bool) -> None:
    if future.done():  # the awaiting batch was cancelled
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list], Awaitable[list]],
        *,
        max_batch_cost: int,
        max_batch_wait_s: float,
        max_queue_cost: int,
        concurrency: int = 1,
        adaptive_wait: bool = False,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        run_inline: Callable[[list], list] | None = None,
        inline_max_cost: int = 0,
        calls: "Calls | None" = None,
    ) -> None:
        self.run_batch = run_batch
        self.run_inline = run_inline
        self.calls = calls or Calls()
        self.inline_max_cost = inline_max_cost if run_inline is not None else 0
        self.max_batch_cost = max_batch_cost
        self.max_batch_wait_s = max_batch_wait_s
        self.max_queue_cost = max_queue_cost
        self.adaptive_wait = adaptive_wait
        self.observer = observer or BatchObserver()
        self.tracer = self.observer.tracer
        self.clock = clock
        self._queue: deque[_Pending] = deque()
        self._queued_cost = 0
        self._arrived = asyncio.Event()
        self._runners = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self._waiting: set[_Pending] = set()  # callers still waiting, queued or running: for abandon()
        self._unanswered = 0  # submitted items without a result yet, queued or running
        self._admitted_cost = 0  # their cost: what admission control bounds
        self._running_items = 0
        self._expected_callers = 1.0
        self._last_arrival = clock()
        self._closed = False
        self._retired = False

    async def submit(self, item: Any, cost: int, timeout_s: float | None = None) -> Any:
        """Queue ``item`` and wait for its result. ``timeout_s``: the caller's remaining deadline."""
        if self._closed:
            raise NotReady("this model version is no longer served (unloaded, or the server is stopping); retry")
        if self._admitted_cost + cost > self.max_queue_cost:
            raise Overloaded(
                f"server busy: {self._admitted_cost} rows queued or running, this request adds {cost}, "
                f"limit {self.max_queue_cost}; retry with backoff"
            )
        now = self.clock()
        times = timing.get()
        if times is not None:
            times.submitted_at = now
        self._unanswered += 1
        self._admitted_cost += cost
        decay = 0.5 ** ((now - self._last_arrival) / CALLERS_HALF_LIFE_S)
        self._expected_callers = max(float(self._unanswered), self._expected_callers * decay)
        self._last_arrival = now
        if self._alone(cost, timeout_s):
            try:
                # One turn of the loop first: calls that arrived while it was busy reach their
                # batcher now, and then this one is not alone and joins their batch instead.
                await asyncio.sleep(0)
            except BaseException:  # cancelled meanwhile: it was never queued
                self._unanswered -= 1
                self._admitted_cost -= cost
                raise
            if self._alone(cost, timeout_s):
                try:
                    return self._run_alone(item, cost, times)
                finally:
                    self._unanswered -= 1
                    self._admitted_cost -= cost
        if self._loop_task is None or self._loop_task.done():
            # An empty context: the task outlives this call, and must not carry its trace (its span
            # would parent the graph runs of later, unrelated batches).
            self._loop_task = asyncio.get_running_loop().create_task(self._collect(), context=contextvars.Context())
        pending = _Pending(
            item, cost, None if timeout_s is None else now + timeout_s, now, asyncio.get_running_loop().create_future()
        )
        pending.times = times
        if self.tracer.enabled:
            pending.trace = self.tracer.enqueue()
        self._queue.append(pending)
        self._waiting.add(pending)
        self._set_queued(self._queued_cost + cost)
        self._arrived.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._withdraw(pending)  # the caller went away: free its place in the queue now
            raise
        finally:
            if pending.trace is not None:  # answered without a run (expired, cancelled, abandoned)
                pending.trace.end_wait()
            self._waiting.discard(pending)
            self._unanswered -= 1
            self._admitted_cost -= cost

    def _alone(self, cost: int, timeout_s: float | None) -> bool:
        """Run this arrival inline: small, nothing queued or running, a lone caller to expect, and
        time left (one whose deadline has passed takes the queue, which answers it unrun)."""
        return (
            cost <= self.inline_max_cost
            and (timeout_s is None or timeout_s > 0)
            and not self._queue
            and not self._running_items
            and self._unanswered == 1
            and self._expected_callers < 1.5
            and self.calls.waiting <= 1
        )

    def _run_alone(self, item: Any, cost: int, times: RunTimes | None) -> Any:
        """One item run at once with ``run_inline``, as a batch of one."""
        self.observer.on_batch(1, cost)
        self.observer.on_wait(0.0)
        span = None
        if self.tracer.enabled:
            span = self.tracer.start_batch([self.tracer.enqueue(waits=False)], self.observer.attributes, 1, cost)
        started = self.clock()
        try:
            if span is None:
                results = self.run_inline([item])
            else:
                with running(span):
                    results = self.run_inline([item])
        finally:
            ended = self.clock()
            self.observer.on_run(ended - started)
        if len(results) != 1:
            raise RuntimeError(f"batch of 1 item returned {len(results)} results")
        if times is not None:
            stamp([times], started, ended, rows_of(item, cost))
        if isinstance(results[0], BaseException):
            raise results[0]
        return results[0]

    def _withdraw(self, pending: _Pending) -> None:
        try:
            self._queue.remove(pending)
        except ValueError:
            return  # already taken into a batch, which drops or discards it
        self._set_queued(self._queued_cost - pending.cost)

    def _set_queued(self, cost: int) -> None:
        self._queued_cost = cost
        if not self._retired:  # an unloaded version's queue series is gone; do not bring it back
            self.observer.on_queue(cost)

    async def _collect(self) -> None:
        """Form batches until closed and empty: wait for a free runner, then for a full batch or the
        wait to end."""
        while True:
            await self._runners.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._runners.release()
                raise
            if batch is None:  # closed, and nothing left to run
                self._runners.release()
                return
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Pending] | None:
        while not self._queue:
            if self._closed or self._retired:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        close_at = self._queue[0].enqueued_at + self.max_batch_wait_s
        while self._should_wait() and (remaining := close_at - self.clock()) > 0:
            self._arrived.clear()
            # A timer that sets the event: cheaper than asyncio.wait_for, which makes a task per wait.
            timer = asyncio.get_running_loop().call_later(remaining, self._arrived.set)
            try:
                await self._arrived.wait()
            finally:
                timer.cancel()
        return self._take()

    def _should_wait(self) -> bool:
        live = [pending.cost for pending in self._queue if not pending.future.done()]
        if sum(live) >= self.max_batch_cost:
            return False
        if not self.adaptive_wait:
            return True
        return len(live) < round(self._expected_callers) - self._running_items

    def _take(self) -> list[_Pending]:
        """Pop items up to the cost limit (at least one live item), answering expired ones."""
        batch, cost, now = [], 0, self.clock()
        while self._queue and (not batch or cost + self._queue[0].cost <= self.max_batch_cost):
            pending = self._queue.popleft()
            self._set_queued(self._queued_cost - pending.cost)
            if pending.future.done():  # the caller cancelled
                continue
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(DeadlineExpired("deadline exceeded while queued; the request was not run"))
                continue
            self.observer.on_wait(now - pending.enqueued_at)
            batch.append(pending)
            cost += pending.cost
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            if not batch:
                return
            cost = sum(pending.cost for pending in batch)
            self.observer.on_batch(len(batch), cost)
            self._running_items += len(batch)
            started = self.clock()
            try:
                span = None
                if self.tracer.enabled:
                    span = self.tracer.start_batch(
                        [pending.trace for pending in batch], self.observer.attributes, len(batch), cost
                    )
                with running(span):
                    results = await self.run_batch([pending.item for pending in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch of {len(batch)} items returned {len(results)} results")
            except Exception as error:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                return
            finally:
                self._running_items -= len(batch)
                ended = self.clock()
                self.observer.on_run(ended - started)
            if any(pending.times is not None for pending in batch):
                rows = sum(rows_of(pending.item, pending.cost) for pending in batch)
                stamp([pending.times for pending in batch], started, ended, rows)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        finally:
            self._runners.release()

    def abandon(self, error: Exception) -> int:
        """Answer every caller still waiting, queued or running, with ``error``; returns how many.

        A running batch finishes in its thread and its results are dropped (every answer path
        skips a future that is already done); queued items are skipped when a batch takes them.
        """
        abandoned = [pending for pending in self._waiting if not pending.future.done()]
        for pending in abandoned:
            pending.future.set_exception(error)
        return len(abandoned)

    def retire(self) -> None:
        """Its model version is no longer served: finish the calls that hold it, then go idle for good."""
        self._retired = True
        self._arrived.set()  # wake the collector, which ends whenever the queue is empty

    def close(self) -> None:
        """Refuse new requests from now on; those already accepted still run (or are abandoned)."""
        self._closed = True
        self._arrived.set()  # wake the collector, which ends once the queue is empty
