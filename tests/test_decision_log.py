"""The decision log (service/monitor/decisions.py): records written to a real JSON Lines file and
POSTed to a real aiohttp server as CloudEvents, a sink that stalls (requests never wait, records are
dropped and counted), bad settings refused, and one record per scored row of a real server."""

import asyncio
import json
import math
import os
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from vae_serve.service.monitor.decisions import DecisionLog, DecisionLogError
from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.monitor.sinks import HTTP_CONCURRENT_POSTS
from vae_serve.service.settings import Settings

CALIBRATION_ROWS = 144
FIELDS = {
    "id", "request_id", "trace_id", "model", "version", "score", "value", "p_value", "percentile", "threshold",
    "false_positive_rate", "decision", "seed", "row", "time",
}  # fmt: skip
MONITOR_MODULE = Path(__file__).resolve().parents[1] / "service" / "monitor" / "monitor.py"
WAIT_S = 30.0  # bound on every wait for the server or the writer to get somewhere (never a timing assertion)


def scored_event(rng, rows: int, request_id: str, *, seed: int = 11, with_inputs: bool = False) -> ScoredEvent:
    """A score call's rows as the plane hands them over (plain data, built by hand)."""
    percentiles = rng.random(rows)
    scores = 40.0 + 30.0 * percentiles
    threshold = 40.0 + 30.0 * 0.95
    return ScoredEvent(
        model="digits",
        version="2",
        score="negative_elbo",
        calibration_rows=CALIBRATION_ROWS,
        scores=scores,
        percentiles=percentiles,
        p_values=(1 + CALIBRATION_ROWS * (1 - percentiles)) / (CALIBRATION_ROWS + 1),
        flagged=scores > threshold,
        threshold=threshold,
        false_positive_rate=0.05,
        rate_requested=True,
        seed=seed,
        request_id=request_id,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        time_s=1_700_000_000.25 + rng.random(),
        inputs=rng.random((rows, 64), dtype=np.float32) if with_inputs else None,
    )


def settings_for(destination: str, **fields) -> Settings:
    return Settings(bundle=Path("unused"), decision_log=destination, **fields)


def metric(registry: CollectorRegistry, name: str, reason: str | None = None) -> float:
    labels = {} if reason is None else {"reason": reason}
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def dropped(registry: CollectorRegistry) -> float:
    return sum(metric(registry, "vae_decision_log_dropped_total", r) for r in ("queue_full", "sink_error", "shutdown"))


def check_record(record: dict, event: ScoredEvent, with_inputs: bool) -> None:
    row = record["row"]
    assert set(record) == (FIELDS | {"input"} if with_inputs else FIELDS)
    assert uuid.UUID(record["id"]).version == 4
    assert (record["request_id"], record["trace_id"]) == (event.request_id, event.trace_id)
    assert (record["model"], record["version"], record["score"]) == ("digits", "2", "negative_elbo")
    assert record["value"] == event.scores[row]  # JSON floats round-trip exactly
    assert record["p_value"] == event.p_values[row]
    assert record["percentile"] == event.percentiles[row]
    assert (record["threshold"], record["false_positive_rate"]) == (event.threshold, 0.05)
    assert record["decision"] == ("anomaly" if event.flagged[row] else "normal")
    assert record["seed"] == event.seed
    assert record["time"].endswith("Z")
    parsed = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert parsed.utcoffset().total_seconds() == 0
    assert math.isclose(parsed.timestamp(), event.time_s, abs_tol=1e-6)
    if with_inputs:
        assert record["input"] == event.inputs[row].tolist()


async def run_log(settings: Settings, registry: CollectorRegistry, events: list[ScoredEvent]) -> None:
    decisions = DecisionLog.from_settings(settings, registry)
    await decisions.start()
    for event in events:
        decisions.offer(event)
    await decisions.close(grace_s=WAIT_S)


@pytest.mark.parametrize("with_inputs", [False, True])
def test_file_sink_appends_one_record_per_row(tmp_path, with_inputs):
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"earlier": true}\n')  # a log is appended to, never truncated
    rng = np.random.default_rng(1)
    events = [scored_event(rng, rows, f"req-{i}", seed=i, with_inputs=True) for i, rows in enumerate((5, 1, 3))]
    registry = CollectorRegistry()
    asyncio.run(run_log(settings_for(str(path), decision_log_inputs=with_inputs), registry, events))

    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier": true}' and len(lines) == 1 + 9
    records = [json.loads(line) for line in lines[1:]]
    by_request = {event.request_id: event for event in events}
    for record in records:
        check_record(record, by_request[record["request_id"]], with_inputs)
    assert [(r["request_id"], r["row"]) for r in records] == [
        (e.request_id, i) for e in events for i in range(len(e.scores))
    ]
    assert len({r["id"] for r in records}) == 9
    assert {r["decision"] for r in records} <= {"anomaly", "normal"}
    assert metric(registry, "vae_decision_log_records_total") == 9
    assert dropped(registry) == 0 and metric(registry, "vae_decision_log_queue_records") == 0


def test_sampling_keeps_the_asked_share_of_rows(tmp_path):
    path = tmp_path / "decisions.jsonl"
    rng = np.random.default_rng(2)
    events = [scored_event(rng, 500, f"req-{i}") for i in range(40)]
    rows, share = 40 * 500, 0.5
    registry = CollectorRegistry()
    settings = settings_for(str(path), decision_log_sample=share, decision_log_queue_records=rows)
    asyncio.run(run_log(settings, registry, events))

    records = [json.loads(line) for line in path.read_text().splitlines()]
    # Binomial(20000, 0.5): sd 70.7; 5 sd leaves a false failure about once in 1.7 million runs.
    tolerance = 5 * math.sqrt(rows * share * (1 - share))
    assert abs(len(records) - rows * share) <= tolerance
    assert metric(registry, "vae_decision_log_records_total") == len(records)
    assert dropped(registry) == 0  # unsampled rows are not drops
    for request_id in ("req-0", "req-39"):
        kept = [r["row"] for r in records if r["request_id"] == request_id]
        assert kept == sorted(set(kept)) and 0 < len(kept) < 500


class RecordingSink:
    """A real CloudEvents sink on 127.0.0.1:0: records each POST's headers and body; ``stall`` makes it
    hold every request until ``release`` is set; ``refuse_odd_rows`` answers 503 to odd rows."""

    def __init__(self, stall: bool = False, refuse_odd_rows: bool = False) -> None:
        self.stall, self.refuse_odd_rows = stall, refuse_odd_rows
        self.received: list[tuple[dict, dict]] = []
        self.answered = 0
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, body))
        self.arrived.set()
        if self.stall:
            await self.release.wait()
        self.answered += 1
        return web.Response(status=503 if self.refuse_odd_rows and body["row"] % 2 else 202)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/events", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/events"

    async def __aexit__(self, *exc) -> None:
        self.release.set()  # only now: the stalled handlers may finish, so the server can stop
        await self.runner.cleanup()

    async def wait_received(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


def test_http_sink_posts_cloudevents_in_binary_mode():
    rng = np.random.default_rng(3)
    events = [scored_event(rng, 6, "req-a", seed=5), scored_event(rng, 4, "req-b", seed=6, with_inputs=True)]
    registry = CollectorRegistry()
    sink = RecordingSink()

    async def scenario() -> None:
        async with sink as url:
            await run_log(settings_for(url), registry, events)

    asyncio.run(scenario())
    assert len(sink.received) == 10
    by_request = {event.request_id: event for event in events}
    for headers, body in sink.received:
        check_record(body, by_request[body["request_id"]], with_inputs=False)  # inputs were not asked for
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-id"] == body["id"]
        assert headers["ce-source"] == "vae-serve/digits"
        assert headers["ce-type"] == "ai.vae-serve.decision"
        assert headers["ce-time"] == body["time"]
        assert headers["content-type"] == "application/json"
    assert sorted((b["request_id"], b["row"]) for _, b in sink.received) == [("req-a", i) for i in range(6)] + [
        ("req-b", i) for i in range(4)
    ]
    assert metric(registry, "vae_decision_log_records_total") == 10 and dropped(registry) == 0


def test_records_the_sink_refuses_are_dropped_and_counted_not_retried():
    events = [scored_event(np.random.default_rng(4), 10, "req-r")]
    registry = CollectorRegistry()
    sink = RecordingSink(refuse_odd_rows=True)

    async def scenario() -> None:
        async with sink as url:
            await run_log(settings_for(url), registry, events)

    asyncio.run(scenario())
    assert len(sink.received) == 10  # each record POSTed once: a refusal is not retried
    assert metric(registry, "vae_decision_log_records_total") == 5
    assert metric(registry, "vae_decision_log_dropped_total", "sink_error") == 5


def test_a_stalled_post_times_out_and_the_log_goes_on():
    rng = np.random.default_rng(5)
    registry = CollectorRegistry()
    sink = RecordingSink(stall=True)

    async def scenario() -> None:
        async with sink as url:
            decisions = DecisionLog.from_settings(settings_for(url), registry, post_timeout_s=0.2)
            await decisions.start()
            decisions.offer(scored_event(rng, 3, "req-t"))
            async with asyncio.timeout(WAIT_S):
                while metric(registry, "vae_decision_log_dropped_total", "sink_error") < 3:
                    await asyncio.sleep(0.01)
            sink.stall = False
            decisions.offer(scored_event(rng, 2, "req-u"))
            await decisions.close(grace_s=WAIT_S)

    asyncio.run(scenario())
    assert metric(registry, "vae_decision_log_dropped_total", "sink_error") == 3
    assert metric(registry, "vae_decision_log_records_total") == 2
    assert [b["request_id"] for _, b in sink.received].count("req-t") == 3  # one POST each, no retry


def test_a_stalling_sink_never_slows_offers_and_drops_what_does_not_fit():
    rng = np.random.default_rng(6)
    capacity = 16
    registry = CollectorRegistry()
    sink = RecordingSink(stall=True)
    gauge_readings: list[float] = []
    offered = 0

    def offer_and_watch(decisions: DecisionLog, event: ScoredEvent) -> None:
        nonlocal offered
        decisions.offer(event)
        offered += len(event.scores)
        gauge_readings.append(metric(registry, "vae_decision_log_queue_records"))

    async def scenario() -> None:
        async with sink as url:
            decisions = DecisionLog.from_settings(settings_for(url, decision_log_queue_records=capacity), registry)
            await decisions.start()
            for i in range(HTTP_CONCURRENT_POSTS):
                offer_and_watch(decisions, scored_event(rng, 1, f"first-{i}"))
            await sink.wait_received(HTTP_CONCURRENT_POSTS)  # the writer is now stuck on POSTs nobody answers
            for i in range(500):
                offer_and_watch(decisions, scored_event(rng, 1 + i % 3, f"req-{i}"))
            # Every offer returned, each on its first try, while the sink had answered nothing.
            assert sink.answered == 0
            assert metric(registry, "vae_decision_log_dropped_total", "queue_full") > 0
            queued = metric(registry, "vae_decision_log_queue_records")
            written = metric(registry, "vae_decision_log_records_total")
            assert queued + written + dropped(registry) == offered
            await decisions.close(grace_s=0.2)  # returns though the sink still answers nothing
            assert sink.answered == 0

    asyncio.run(scenario())
    assert max(gauge_readings) <= capacity
    assert metric(registry, "vae_decision_log_queue_records") == 0
    assert metric(registry, "vae_decision_log_records_total") == 0
    assert metric(registry, "vae_decision_log_dropped_total", "shutdown") > 0
    assert dropped(registry) == offered


def _unwritable_dir(tmp_path: Path) -> str:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "decisions.jsonl")


def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "pipe")
    return str(tmp_path / "pipe")


def _file_as_dir(tmp_path: Path) -> str:
    (tmp_path / "plain").write_text("")
    return str(tmp_path / "plain" / "decisions.jsonl")


@pytest.mark.parametrize(
    "make_value, message",
    [
        (lambda tmp: "ftp://127.0.0.1/log", r"unsupported URL scheme 'ftp://'"),
        (lambda tmp: "http://", r"the URL names no host"),
        (lambda tmp: "http://127.0.0.1:99999/log", r"not a valid URL \(Port out of range"),
        (lambda tmp: str(tmp), r"is a directory; give a file in it, e\.g\. .*decisions\.jsonl"),
        (lambda tmp: str(tmp / "missing" / "decisions.jsonl"), r"the directory .*missing does not exist"),
        (_file_as_dir, r"the directory .*plain is not a directory"),
        (_fifo, r"cannot open it for appending \(a named pipe no process reads\)"),
        pytest.param(
            _unwritable_dir,
            r"cannot open it for appending \(Permission denied\)",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory"),
        ),
    ],
)
def test_bad_destinations_are_refused_with_a_clear_line(tmp_path, make_value, message):
    with pytest.raises(DecisionLogError, match=message) as refused:
        DecisionLog.from_settings(settings_for(make_value(tmp_path)), CollectorRegistry())
    text = str(refused.value)
    assert "\n" not in text and text.startswith("--decision-log")
    assert isinstance(refused.value, ValueError)


def test_no_destination_means_no_log():
    assert DecisionLog.from_settings(Settings(bundle=Path("unused")), CollectorRegistry()) is None
    # An image that bakes in VAE_DECISION_LOG is switched off with VAE_DECISION_LOG= (empty).
    assert DecisionLog.from_settings(Settings(bundle=Path("unused"), decision_log=""), CollectorRegistry()) is None


def test_a_url_password_stays_out_of_the_log_messages(caplog):
    url = "http://user:hunter2@127.0.0.1:9/events"
    with caplog.at_level("INFO"):
        decisions = DecisionLog.from_settings(settings_for(url), CollectorRegistry())
    assert decisions is not None and "127.0.0.1:9" in caplog.text and "hunter2" not in caplog.text


needs_wiring = pytest.mark.skipif(
    not MONITOR_MODULE.exists(),
    reason="service/monitor/monitor.py (the server's monitoring wiring) does not exist yet",
)


@needs_wiring
def test_a_real_server_logs_one_record_per_scored_row(tmp_path, digits_bundle):
    from tests.server_process import start_server, tensor
    from vae_serve.api.v1 import vae_pb2

    path = tmp_path / "decisions.jsonl"
    server = start_server("--bundle", str(digits_bundle), "--decision-log", str(path))
    rng = np.random.default_rng(7)
    elbo = vae_pb2.SCORE_TYPE_NEGATIVE_ELBO
    calls = [
        ("decisions-1", vae_pb2.ScoreAnomalyRequest(x=tensor(rng.random((5, 64))), false_positive_rate=0.05, seed=3)),
        ("decisions-2", vae_pb2.ScoreAnomalyRequest(x=tensor(rng.random((7, 64))), score=elbo)),
    ]
    try:
        replies = {
            rid: server.stub.ScoreAnomaly(request, metadata=(("x-request-id", rid),), timeout=30)
            for rid, request in calls
        }
    finally:
        assert server.stop() == 0, server.log()  # SIGTERM drains the log before the process exits

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 12
    names = {
        vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR: "reconstruction_error",
        vae_pb2.SCORE_TYPE_NEGATIVE_ELBO: "negative_elbo",
    }
    for request_id, reply in replies.items():
        mine = sorted((r for r in records if r["request_id"] == request_id), key=lambda r: r["row"])
        assert [r["row"] for r in mine] == list(range(len(reply.scores)))
        for record in mine:
            row = record["row"]
            assert set(record) == FIELDS
            assert (record["model"], record["version"]) == (reply.model.name, reply.model.version)
            assert record["score"] == names[reply.score]
            assert record["p_value"] == pytest.approx(reply.p_value[row], rel=1e-12)
            assert record["value"] == pytest.approx(reply.scores[row], rel=1e-12)
            assert record["percentile"] == pytest.approx(reply.percentile[row], rel=1e-12, abs=1e-15)
            assert record["decision"] == ("anomaly" if reply.is_anomaly[row] else "normal")
            assert record["threshold"] == pytest.approx(reply.threshold, rel=1e-12)
            assert record["false_positive_rate"] == pytest.approx(reply.false_positive_rate, rel=1e-12)
            assert record["seed"] == reply.seed


@needs_wiring
def test_the_server_refuses_a_bad_decision_log_at_start(tmp_path, digits_bundle):
    from tests.server_process import launch

    missing = tmp_path / "missing" / "decisions.jsonl"
    process, _lines, log_path = launch("--bundle", str(digits_bundle), "--decision-log", str(missing))
    assert process.wait(timeout=60) != 0
    stderr = log_path.read_text()
    assert "--decision-log" in stderr and "does not exist" in stderr and "Traceback" not in stderr
