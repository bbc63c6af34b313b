"""Triton's statistics extension (gRPC ModelStatistics, REST /v2/models[/...]/stats) on a real
server: ModelInfer calls of known rows over both bindings are counted per OIP model version,
failures apart, VaeService calls not at all; both bindings answer the same document; tritonclient
parses it. The batcher's per-call times are checked directly, with a hand-moved clock.
"""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from tests.raw_http import get
from tests.server_process import start_server, tensor
from tests.test_batching import Clock, Runner
from tests.venv_probe import TRITONCLIENT_PYTHON, run_probe
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.service.plane.batching import DynamicBatcher
from vae_serve.service.plane.statistics import RunTimes, timing

STEPS = ("queue", "compute_input", "compute_infer", "compute_output")


@pytest.fixture(scope="module")
def rest_server(digits_bundle):
    server = start_server("--bundle", str(digits_bundle), "--http-port", "0")
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def oip(rest_server) -> oip_pb2_grpc.GRPCInferenceServiceStub:
    return oip_pb2_grpc.GRPCInferenceServiceStub(rest_server.channel)


def grpc_infer(oip, model: str, values: np.ndarray, name: str = "x", **parameters) -> oip_pb2.ModelInferResponse:
    request = oip_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=values.shape)
    request.raw_input_contents.append(np.ascontiguousarray(values, dtype="<f4").tobytes())
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return oip.ModelInfer(request, timeout=30)


def rest_infer(server, model: str, values: np.ndarray, name: str = "x") -> tuple[int, dict]:
    body = {"inputs": [{"name": name, "shape": list(values.shape), "datatype": "FP32", "data": values.tolist()}]}
    url = f"{server.http_url}/v2/models/{model}/infer"
    status, payload = get(url, {"Content-Type": "application/json"}, json.dumps(body).encode())
    return status, json.loads(payload)


def rest_stats(server, path: str) -> tuple[int, dict]:
    status, payload = get(f"{server.http_url}{path}")
    return status, json.loads(payload)


def one_model(server, model: str) -> dict:
    status, document = rest_stats(server, f"/v2/models/{model}/stats")
    assert status == 200, document
    (stats,) = document["model_stats"]
    return stats


def rows_of(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 64), dtype=np.float32)


def test_calls_of_known_rows_are_counted_over_both_bindings(rest_server, oip):
    calls = {"digits-elbo": [3, 5, 1, 2, 4], "digits-encoder": [7, 6, 2, 1]}
    before_ms = time.time_ns() // 1_000_000
    for model, sizes in calls.items():
        assert one_model(rest_server, model)["inference_count"] == 0
        # Half over gRPC, concurrently (they may share batches), half over REST.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda size, model=model: grpc_infer(oip, model, rows_of(size, size)), sizes[::2]))
        assert [answer.outputs[0].shape[0] for answer in answers] == sizes[::2]
        for size in sizes[1::2]:
            assert rest_infer(rest_server, model, rows_of(size, size))[0] == 200
    after_ms = time.time_ns() // 1_000_000
    for model, sizes in calls.items():
        stats = one_model(rest_server, model)
        steps = stats["inference_stats"]
        assert (stats["name"], stats["version"]) == (model, "1")
        assert stats["inference_count"] == sum(sizes)
        assert steps["success"]["count"] == len(sizes) and steps["success"]["ns"] > 0
        assert 1 <= stats["execution_count"] <= len(sizes)
        assert steps["fail"] == {"count": 0, "ns": 0}
        for step in STEPS:
            assert steps[step]["count"] == len(sizes) and steps[step]["ns"] > 0, (step, steps[step])
        assert steps["cache_hit"] == steps["cache_miss"] == {"count": 0, "ns": 0}
        assert before_ms <= stats["last_inference"] <= after_ms
        batches = stats["batch_stats"]
        assert sum(batch["compute_infer"]["count"] for batch in batches) == stats["execution_count"]
        assert all(batch["batch_size"] >= 1 and batch["compute_infer"]["ns"] > 0 for batch in batches)
        assert max(batch["batch_size"] for batch in batches) >= max(sizes)  # a batch holds at least one call
        assert stats["response_stats"] == {} and stats["memory_usage"] == []


def test_grpc_and_rest_answer_the_same_statistics(rest_server, oip):
    for model in ("digits-elbo", "digits-decoder"):
        status, document = rest_stats(rest_server, f"/v2/models/{model}/stats")
        reply = oip.ModelStatistics(oip_pb2.ModelStatisticsRequest(name=model), timeout=10)
        assert status == 200 and json_format.ParseDict(document, oip_pb2.ModelStatisticsResponse()) == reply
    status, document = rest_stats(rest_server, "/v2/models/stats")
    every = oip.ModelStatistics(oip_pb2.ModelStatisticsRequest(), timeout=10)
    assert status == 200 and json_format.ParseDict(document, oip_pb2.ModelStatisticsResponse()) == every
    names = [(stats.name, stats.version) for stats in every.model_stats]
    assert names == [("digits-decoder", "1"), ("digits-elbo", "1"), ("digits-encoder", "1")]
    status, versioned = rest_stats(rest_server, "/v2/models/digits-elbo/versions/1/stats")
    assert status == 200 and versioned["model_stats"] == [one_model(rest_server, "digits-elbo")]
    assert "statistics" in oip.ServerMetadata(oip_pb2.ServerMetadataRequest(), timeout=10).extensions
    assert "statistics" in rest_stats(rest_server, "/v2")[1]["extensions"]


def test_vae_service_calls_are_not_counted(rest_server, oip):
    counted = one_model(rest_server, "digits-encoder")
    rest_server.stub.Encode(vae_pb2.EncodeRequest(x=tensor(rows_of(4, 2))), timeout=30)
    rest_server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(rows_of(4, 2)), k=2), timeout=30)
    assert one_model(rest_server, "digits-encoder") == counted


def test_a_failing_call_is_counted_in_fail(rest_server, oip):
    latent = oip.ModelMetadata(oip_pb2.ModelMetadataRequest(name="digits-decoder"), timeout=10).inputs[0].shape[1]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(oip, "digits-decoder", rows_of(2, 3)[:, : latent + 1], "z")  # one column too many
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "z" in refused.value.details()
    status, reply = rest_infer(rest_server, "digits-decoder", rows_of(2, 3)[:, : latent + 1], "z")
    assert status == 400 and "z" in reply["error"]
    stats = one_model(rest_server, "digits-decoder")
    steps = stats["inference_stats"]
    assert steps["fail"]["count"] == 2 and steps["fail"]["ns"] > 0
    assert steps["success"]["count"] == 0 and stats["inference_count"] == 0 and stats["execution_count"] == 0
    # A good call after them is counted apart.
    grpc_infer(oip, "digits-decoder", np.zeros((3, latent), np.float32), "z")
    stats = one_model(rest_server, "digits-decoder")
    assert (stats["inference_count"], stats["inference_stats"]["success"]["count"]) == (3, 1)
    assert stats["inference_stats"]["fail"]["count"] == 2


@pytest.mark.parametrize(
    "name, version, code, pattern",
    [
        ("nothing-elbo", "", grpc.StatusCode.NOT_FOUND, "unknown model 'nothing'"),
        ("digits", "", grpc.StatusCode.NOT_FOUND, "unknown model 'digits'; models are named"),
        ("digits-elbo", "9", grpc.StatusCode.NOT_FOUND, "no version '9'"),
        ("", "1", grpc.StatusCode.INVALID_ARGUMENT, "without a model name"),
    ],
)
def test_unknown_models_are_refused_clearly(rest_server, oip, name, version, code, pattern):
    with pytest.raises(grpc.RpcError) as refused:
        oip.ModelStatistics(oip_pb2.ModelStatisticsRequest(name=name, version=version), timeout=10)
    assert refused.value.code() == code and pattern in refused.value.details(), refused.value.details()
    if name:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/stats"
        status, document = rest_stats(rest_server, path)
        assert status == 404 and pattern in document["error"], document


def test_tritonclient_parses_the_statistics(rest_server, oip):
    grpc_infer(oip, "digits-elbo", rows_of(2, 9), k=3)
    http_address = rest_server.http_url.removeprefix("http://")
    address = f"127.0.0.1:{rest_server.port}"
    result = run_probe(TRITONCLIENT_PYTHON, "tritonclient", "tritonclient_stats_probe.py", address, http_address,
                       "digits-elbo")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = one_model(rest_server, "digits-elbo")
    assert report["grpc_class"].endswith("grpc_service_pb2.ModelStatisticsResponse")
    assert report["http"]["model_stats"] == [expected] and report["http_version"]["model_stats"] == [expected]
    (from_grpc,) = report["grpc"]["model_stats"]  # protobuf's JSON: 64-bit integers are strings
    assert int(from_grpc["inference_count"]) == expected["inference_count"] >= 2
    assert int(from_grpc["inference_stats"]["success"]["count"]) == expected["inference_stats"]["success"]["count"]
    assert int(from_grpc["batch_stats"][0]["batch_size"]) == expected["batch_stats"][0]["batch_size"]
    assert len(report["grpc_all"]["model_stats"]) == len(report["http_all"]["model_stats"]) == 3
    assert report["grpc_unknown"].startswith("StatusCode.NOT_FOUND") and "unknown model" in report["grpc_unknown"]
    assert report["http_unknown"] is not None and "unknown model" in report["http_unknown"]


# --- the batcher's per-call times, driven directly ------------------------------------------------


@dataclass(frozen=True)
class Rows:
    rows: int


async def timed(batcher: DynamicBatcher, item, cost: int) -> tuple[object, RunTimes]:
    times = RunTimes()
    timing.set(times)  # a task's own context: its neighbours never see it
    return await batcher.submit(item, cost), times


def test_the_batcher_times_the_callers_that_ask_and_batches_as_before():
    async def scenario():
        runner, clock = Runner(gated=True), Clock()
        batcher = DynamicBatcher(runner, max_batch_cost=100, max_batch_wait_s=0.0, max_queue_cost=100, clock=clock)
        clock.now = 1.0
        first = asyncio.ensure_future(timed(batcher, "a", 1))
        await runner.started.wait()  # batch ["a"] runs, held by the gate
        clock.now = 2.0
        second = asyncio.ensure_future(timed(batcher, Rows(3), 6))
        untimed = asyncio.ensure_future(batcher.submit("c", 1))
        for _ in range(3):
            await asyncio.sleep(0)  # both queued behind the running batch
        clock.now = 5.0
        runner.gate.set()
        (result_a, times_a), (result_b, times_b), result_c = await asyncio.gather(first, second, untimed)
        assert runner.batches == [["a"], [Rows(3), "c"]]  # the batches an untimed load forms
        assert (result_a, result_b, result_c) == (("result", "a"), ("result", Rows(3)), ("result", "c"))
        assert (times_a.submitted_at, times_a.started_at, times_a.ended_at, times_a.batch_rows) == (1.0, 1.0, 5.0, 1)
        assert (times_b.submitted_at, times_b.started_at, times_b.ended_at, times_b.batch_rows) == (2.0, 5.0, 5.0, 4)
        assert 0 < times_a.batch != times_b.batch > 0

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_call_run_inline_is_timed_as_a_batch_of_one():
    async def scenario():
        batcher = DynamicBatcher(
            Runner(), max_batch_cost=100, max_batch_wait_s=0.0, max_queue_cost=100,
            run_inline=lambda items: [("inline", item) for item in items], inline_max_cost=8,
        )  # fmt: skip
        result, times = await timed(batcher, Rows(2), 2)
        assert result == ("inline", Rows(2)) and times.batch > 0 and times.batch_rows == 2
        assert times.submitted_at <= times.started_at <= times.ended_at

    asyncio.run(asyncio.wait_for(scenario(), 10))
