"""The dynamic batcher, driven directly: asyncio.Event gates and a hand-moved clock, no sleeps."""

import asyncio

import pytest

from vae_serve.core.errors import DeadlineExpired, NotReady, Overloaded
from vae_serve.service.observe.observer import BatchObserver
from vae_serve.service.plane.batching import DynamicBatcher

LONG_S = 3600.0  # a wait that would hang the test if the batcher relied on it


class Runner:
    """A run_batch that records each batch and can be held shut by a gate."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.started.set()
        await self.gate.wait()
        return [("result", item) for item in items]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class QueueGauge:
    """What the batcher reports through its observer (the vae_queue_rows gauge): the queued cost."""

    def __init__(self) -> None:
        self.value = 0

    def set(self, cost: int) -> None:
        self.value = cost

    def observer(self) -> BatchObserver:
        return BatchObserver(on_queue=self.set)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_a_full_batch_runs_at_once_and_results_map_back():
    async def scenario():
        runner = Runner()
        batcher = DynamicBatcher(runner, max_batch_cost=4, max_batch_wait_s=LONG_S, max_queue_cost=100)
        results = await asyncio.gather(*(batcher.submit(index, cost=1) for index in range(4)))
        assert results == [("result", index) for index in range(4)]
        assert runner.batches == [[0, 1, 2, 3]]

    run(scenario())


def test_a_partial_batch_waits_at_most_max_batch_wait():
    async def scenario():
        runner = Runner()
        batcher = DynamicBatcher(runner, max_batch_cost=100, max_batch_wait_s=0.01, max_queue_cost=100)
        assert await batcher.submit("alone", cost=1) == ("result", "alone")
        assert runner.batches == [["alone"]]

    run(scenario())


def test_arrivals_during_a_run_form_the_next_batch():
    async def scenario():
        runner = Runner(gated=True)
        batcher = DynamicBatcher(runner, max_batch_cost=100, max_batch_wait_s=0.0, max_queue_cost=100)
        first = asyncio.ensure_future(batcher.submit("first", cost=1))
        await runner.started.wait()
        later = [asyncio.ensure_future(batcher.submit(name, cost=2)) for name in ("a", "b", "c")]
        await asyncio.sleep(0)  # let them enqueue
        runner.gate.set()
        await asyncio.gather(first, *later)
        assert runner.batches == [["first"], ["a", "b", "c"]]

    run(scenario())


def test_batches_respect_the_cost_limit_and_a_big_request_runs_alone():
    async def scenario():
        runner = Runner(gated=True)
        batcher = DynamicBatcher(runner, max_batch_cost=5, max_batch_wait_s=0.0, max_queue_cost=100)
        blocker = asyncio.ensure_future(batcher.submit("blocker", cost=1))
        await runner.started.wait()
        calls = [
            asyncio.ensure_future(batcher.submit(name, cost=cost))
            for name, cost in (("a", 3), ("b", 2), ("c", 1), ("huge", 50), ("d", 1))
        ]
        await asyncio.sleep(0)
        runner.gate.set()
        await asyncio.gather(blocker, *calls)
        assert runner.batches == [["blocker"], ["a", "b"], ["c"], ["huge"], ["d"]]

    run(scenario())


def test_an_error_reaches_every_caller_of_the_batch():
    async def failing(items):
        raise ValueError("graph exploded")

    async def scenario():
        batcher = DynamicBatcher(failing, max_batch_cost=3, max_batch_wait_s=LONG_S, max_queue_cost=100)
        outcomes = await asyncio.gather(*(batcher.submit(index, cost=1) for index in range(3)), return_exceptions=True)
        assert all(isinstance(outcome, ValueError) and "exploded" in str(outcome) for outcome in outcomes)
        # The batcher survives a failed batch.
        batcher.run_batch = Runner()
        assert await asyncio.gather(*(batcher.submit(index, cost=1) for index in range(3))) == [
            ("result", index) for index in range(3)
        ]

    run(scenario())


def test_a_wrong_number_of_results_fails_the_whole_batch():
    async def short(items):
        return items[:-1]

    async def scenario():
        batcher = DynamicBatcher(short, max_batch_cost=2, max_batch_wait_s=LONG_S, max_queue_cost=100)
        outcomes = await asyncio.gather(batcher.submit(1, 1), batcher.submit(2, 1), return_exceptions=True)
        assert all(isinstance(outcome, RuntimeError) and "returned 1 results" in str(outcome) for outcome in outcomes)

    run(scenario())


def test_admission_bounds_queued_and_running_work_and_rejects_at_once():
    async def scenario():
        runner, queue = Runner(gated=True), QueueGauge()
        batcher = DynamicBatcher(
            runner, max_batch_cost=4, max_batch_wait_s=0.0, max_queue_cost=10, observer=queue.observer()
        )
        running = asyncio.ensure_future(batcher.submit("running", cost=4))
        await runner.started.wait()
        assert queue.value == 0  # running, no longer queued, but still admitted
        queued = asyncio.ensure_future(batcher.submit("queued", cost=6))
        await asyncio.sleep(0)
        assert queue.value == 6
        with pytest.raises(Overloaded, match="10 rows queued or running, this request adds 1, limit 10"):
            await batcher.submit("one too many", cost=1)
        runner.gate.set()
        await asyncio.gather(running, queued)
        assert queue.value == 0
        assert await batcher.submit("fits again", cost=10) == ("result", "fits again")

    run(scenario())


def test_an_expired_deadline_is_not_run():
    async def scenario():
        clock = Clock()
        runner = Runner(gated=True)
        batcher = DynamicBatcher(runner, max_batch_cost=10, max_batch_wait_s=0.0, max_queue_cost=100, clock=clock)
        running = asyncio.ensure_future(batcher.submit("running", cost=1))
        await runner.started.wait()
        hurried = asyncio.ensure_future(batcher.submit("hurried", cost=1, timeout_s=5.0))
        patient = asyncio.ensure_future(batcher.submit("patient", cost=1, timeout_s=50.0))
        await asyncio.sleep(0)
        clock.now = 10.0  # the first deadline passes while both wait in the queue
        runner.gate.set()
        with pytest.raises(DeadlineExpired):
            await hurried
        assert await patient == ("result", "patient")
        await running
        assert ["hurried"] not in runner.batches and all("hurried" not in batch for batch in runner.batches)

    run(scenario())


def test_a_cancelled_caller_is_dropped():
    async def scenario():
        runner, queue = Runner(gated=True), QueueGauge()
        batcher = DynamicBatcher(
            runner, max_batch_cost=10, max_batch_wait_s=0.0, max_queue_cost=100, observer=queue.observer()
        )
        running = asyncio.ensure_future(batcher.submit("running", cost=1))
        await runner.started.wait()
        gone = asyncio.ensure_future(batcher.submit("gone", cost=1))
        stays = asyncio.ensure_future(batcher.submit("stays", cost=1))
        await asyncio.sleep(0)
        assert queue.value == 2
        gone.cancel()
        await asyncio.sleep(0)
        assert queue.value == 1  # withdrawn at once, not when a batch would have taken it
        runner.gate.set()
        assert await stays == ("result", "stays")
        await running
        assert runner.batches == [["running"], ["stays"]]

    run(scenario())


def test_an_exception_result_reaches_only_its_own_caller():
    async def mixed(items):
        return [ValueError(f"bad {item}") if item == "bad" else item.upper() for item in items]

    async def scenario():
        batcher = DynamicBatcher(mixed, max_batch_cost=3, max_batch_wait_s=LONG_S, max_queue_cost=100)
        outcomes = await asyncio.gather(
            *(batcher.submit(name, 1) for name in ("a", "bad", "c")), return_exceptions=True
        )
        assert outcomes[0] == "A" and outcomes[2] == "C" and isinstance(outcomes[1], ValueError)

    run(scenario())


def test_adaptive_wait_fills_a_batch_for_the_callers_it_expects_and_never_keeps_a_lone_one():
    async def settle():
        for _ in range(5):
            await asyncio.sleep(0)

    async def scenario():
        clock = Clock()
        runner = Runner()
        batcher = DynamicBatcher(
            runner, max_batch_cost=100, max_batch_wait_s=LONG_S, max_queue_cost=100, adaptive_wait=True, clock=clock
        )
        # Four callers at once: four are expected from now on.
        await asyncio.gather(*(batcher.submit(f"first {index}", cost=1) for index in range(4)))
        # Two of the four come back: the batch waits for the other two instead of running.
        early = [asyncio.ensure_future(batcher.submit(name, cost=1)) for name in ("a", "b")]
        await settle()
        assert len(runner.batches) == 1
        late = [asyncio.ensure_future(batcher.submit(name, cost=1)) for name in ("c", "d")]
        await asyncio.gather(*early, *late)
        assert runner.batches[1] == ["a", "b", "c", "d"]
        # A second later (20 half-lives) the expectation has decayed: a lone caller runs at once,
        # although max_batch_wait_s is an hour.
        clock.now = 1.0
        assert await batcher.submit("alone", cost=1) == ("result", "alone")
        assert runner.batches[2] == ["alone"]

    run(scenario())


def test_close_refuses_new_work_runs_what_was_accepted_and_ends_the_collector():
    async def scenario():
        before = asyncio.all_tasks()
        runner = Runner(gated=True)
        batcher = DynamicBatcher(runner, max_batch_cost=1, max_batch_wait_s=0.0, max_queue_cost=100)
        running = asyncio.ensure_future(batcher.submit("running", cost=1))
        await runner.started.wait()
        queued = asyncio.ensure_future(batcher.submit("queued", cost=1))
        await asyncio.sleep(0)
        batcher.close()
        with pytest.raises(NotReady, match="no longer served"):
            await batcher.submit("late", cost=1)
        runner.gate.set()
        assert await asyncio.gather(running, queued) == [("result", "running"), ("result", "queued")]
        assert runner.batches == [["running"], ["queued"]]
        # The collecting task ends once the queue is empty: nothing of the batcher keeps running.
        await asyncio.wait_for(asyncio.gather(*(asyncio.all_tasks() - before)), 5)

    run(scenario())


def test_a_retired_batcher_serves_its_callers_then_holds_no_task():
    async def scenario():
        before = asyncio.all_tasks()
        runner, queue = Runner(), QueueGauge()
        batcher = DynamicBatcher(
            runner, max_batch_cost=4, max_batch_wait_s=0.0, max_queue_cost=100, observer=queue.observer()
        )
        assert await batcher.submit("served", cost=1) == ("result", "served")
        batcher.retire()
        await asyncio.wait_for(asyncio.gather(*(asyncio.all_tasks() - before)), 5)  # idle: its task ended
        queue.value = -1
        # A call that still holds the retired version (a stream's next chunk) is answered ...
        assert await batcher.submit("next chunk", cost=1) == ("result", "next chunk")
        assert queue.value == -1  # ... without reporting a queue for a version that is gone
        await asyncio.wait_for(asyncio.gather(*(asyncio.all_tasks() - before)), 5)

    run(scenario())


class Inline:
    """A run_inline that records each batch and the thread it ran on."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.threads: list[int] = []

    def __call__(self, items: list) -> list:
        import threading

        self.batches.append(list(items))
        self.threads.append(threading.get_ident())
        return [("inline", item) for item in items]


def test_a_lone_small_call_runs_inline_on_the_loop_and_a_large_one_does_not():
    async def scenario():
        import threading

        runner, inline, batches = Runner(), Inline(), []
        observer = BatchObserver(on_batch=lambda items, cost: batches.append((items, cost)))
        batcher = DynamicBatcher(
            runner, max_batch_cost=100, max_batch_wait_s=LONG_S, max_queue_cost=1000, adaptive_wait=True,
            observer=observer, run_inline=inline, inline_max_cost=4,
        )  # fmt: skip
        assert await batcher.submit("small", cost=4) == ("inline", "small")
        assert inline.threads == [threading.get_ident()] and runner.batches == []
        assert await batcher.submit("large", cost=5) == ("result", "large")  # above inline_max_cost
        assert runner.batches == [["large"]] and batches == [(1, 4), (1, 5)]

    run(scenario())


def test_concurrent_small_calls_are_not_run_inline_but_batched():
    async def scenario():
        runner, inline = Runner(), Inline()
        batcher = DynamicBatcher(
            runner, max_batch_cost=100, max_batch_wait_s=LONG_S, max_queue_cost=1000, adaptive_wait=True,
            run_inline=inline, inline_max_cost=4,
        )  # fmt: skip
        results = await asyncio.gather(*(batcher.submit(index, cost=1) for index in range(8)))
        # All eight arrive in one turn of the loop: each sees the others and none runs inline.
        assert results == [("result", index) for index in range(8)]
        assert inline.batches == [] and sum(len(batch) for batch in runner.batches) == 8
        assert len(runner.batches) < 8

    run(scenario())


def test_a_call_waiting_on_another_batcher_keeps_a_small_call_off_the_loop():
    async def scenario():
        from vae_serve.service.plane.batching import Calls

        calls = Calls(waiting=2)  # this call and one on another batcher (counted by the data plane)
        runner, inline = Runner(), Inline()
        batcher = DynamicBatcher(
            runner, max_batch_cost=100, max_batch_wait_s=LONG_S, max_queue_cost=1000, adaptive_wait=True,
            run_inline=inline, inline_max_cost=4, calls=calls,
        )  # fmt: skip
        assert await batcher.submit("small", cost=1) == ("result", "small")
        assert inline.batches == [] and runner.batches == [["small"]]

    run(scenario())


def test_an_inline_error_result_reaches_its_caller():
    async def scenario():
        def failing(items: list) -> list:
            return [ValueError("bad row") for _ in items]

        batcher = DynamicBatcher(
            Runner(), max_batch_cost=100, max_batch_wait_s=LONG_S, max_queue_cost=1000,
            run_inline=failing, inline_max_cost=4,
        )  # fmt: skip
        with pytest.raises(ValueError, match="bad row"):
            await batcher.submit("x", cost=1)
        assert batcher._admitted_cost == 0 and batcher._unanswered == 0

    run(scenario())


def test_a_lone_caller_cancelled_before_its_inline_run_leaves_nothing_admitted():
    async def scenario():
        inline = Inline()
        batcher = DynamicBatcher(
            Runner(), max_batch_cost=8, max_batch_wait_s=LONG_S, max_queue_cost=8,
            run_inline=inline, inline_max_cost=4,
        )  # fmt: skip
        task = asyncio.ensure_future(batcher.submit("x", cost=4))
        await asyncio.sleep(0)  # the call is in its one turn of the loop before running inline
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inline.batches == [] and batcher._admitted_cost == 0 and batcher._unanswered == 0
        assert await batcher.submit("y", cost=8) == ("result", "y")  # the whole bound is free again

    run(scenario())


def test_a_lone_caller_past_its_deadline_is_answered_unrun():
    async def scenario():
        inline, runner = Inline(), Runner()
        batcher = DynamicBatcher(
            runner, max_batch_cost=1, max_batch_wait_s=LONG_S, max_queue_cost=100,
            run_inline=inline, inline_max_cost=4,
        )  # fmt: skip
        with pytest.raises(DeadlineExpired):
            await batcher.submit("late", cost=1, timeout_s=0.0)
        assert inline.batches == [] and runner.batches == []

    run(scenario())
