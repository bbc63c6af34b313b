"""Dynamic batching in a real server: replies are the same as unbatched ones, batches really form,
and a full queue answers RESOURCE_EXHAUSTED while accepted calls complete.
"""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tests.server_process import SERVING, start_server, tensor
from tests.test_server_lifecycle import ELBO_IN_FLIGHT, samples, scrape, wait_for_elbo_in_flight
from vae_serve.api.v1 import vae_pb2


@pytest.fixture(scope="module")
def requests_mix():
    rng = np.random.default_rng(3)
    mix = []
    for seed in range(24):
        x = tensor(rng.random((1 + seed % 3, 64), dtype=np.float32))
        mix.append(("Elbo", vae_pb2.ElboRequest(x=x, k=1 + seed % 5 * 10, seed=seed)))
        mix.append(("Encode", vae_pb2.EncodeRequest(x=x, num_samples=seed % 2, seed=seed)))
        mix.append(("ScoreAnomaly", vae_pb2.ScoreAnomalyRequest(x=x, score=1 + seed % 3, seed=seed)))
        mix.append(("Sample", vae_pb2.SampleRequest(n=5, seed=seed)))
    return mix


def replies(server, mix) -> list[bytes]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(getattr(server.stub, rpc), request, timeout=60) for rpc, request in mix]
        return [future.result().SerializeToString() for future in futures]


def test_batched_replies_equal_unbatched_ones(digits_bundle, requests_mix):
    # One runner and a 50 ms window: concurrent calls must share batches.
    batched = start_server("--bundle", str(digits_bundle), "--batch-runners", "1", "--max-batch-wait", "0.05")
    unbatched = start_server("--bundle", str(digits_bundle), "--max-batch-rows", "1")
    try:
        assert replies(batched, requests_mix) == replies(unbatched, requests_mix)
        together = samples(scrape(batched.metrics_url))
        alone = samples(scrape(unbatched.metrics_url))
        for kind in ("elbo", "encode", "score", "sample"):
            requests = together[("vae_batch_requests_sum", (("kind", kind),))]
            batches = together[("vae_batch_requests_count", (("kind", kind),))]
            assert requests == 24 and batches < requests, f"{kind}: {requests} requests in {batches} batches"
            assert alone[("vae_batch_requests_count", (("kind", kind),))] == 24
    finally:
        assert batched.stop() == 0 and unbatched.stop() == 0


def test_overload_rejects_exactly_the_calls_beyond_the_bound(digits_bundle):
    # A bound of 3 heavy calls (1024 rows x 256 samples each, over half a second of work apiece)
    # and 12 sent at once: all 12 arrive before the first finishes, so exactly 9 are refused.
    cost = 1024 * 256
    server = start_server(
        "--bundle", str(digits_bundle), "--worker-threads", "1",
        "--max-batch-rows", str(cost), "--max-queue-rows", str(3 * cost),
    )  # fmt: skip
    x = np.random.default_rng(0).random((1024, 64), dtype=np.float32)
    calls = [vae_pb2.ElboRequest(x=tensor(x), k=256, seed=seed) for seed in range(12)]
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(server.stub.Elbo.with_call, request, timeout=120) for request in calls]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result()[0])
                except grpc.RpcError as error:
                    outcomes.append(error)
        rejected = [outcome for outcome in outcomes if isinstance(outcome, grpc.RpcError)]
        accepted = [outcome for outcome in outcomes if not isinstance(outcome, grpc.RpcError)]
        assert len(rejected) == 9 and len(accepted) == 3
        for error in rejected:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry with backoff" in error.details()
            assert ("grpc-retry-pushback-ms", "100") in tuple(error.trailing_metadata())
        for reply in accepted:
            assert len(reply.iwae) == 1024 and np.all(np.isfinite(reply.iwae))
        assert server.health_status() == SERVING
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_requests_total", (("code", "RESOURCE_EXHAUSTED"), ("method", "Elbo")))] == 9
        assert counted[("vae_requests_total", (("code", "OK"), ("method", "Elbo")))] == 3
        assert counted[("vae_queue_rows", (("kind", "elbo"), ("model", "digits:1")))] == 0
    finally:
        assert server.stop() == 0


def test_a_call_whose_deadline_passes_in_the_queue_is_never_run(digits_bundle):
    server = start_server("--bundle", str(digits_bundle), "--worker-threads", "1", "--max-batch-rows", "204800")
    heavy = vae_pb2.ElboRequest(x=tensor(np.random.default_rng(0).random((1024, 64))), k=200, seed=1)
    hurried = vae_pb2.ElboRequest(x=tensor(np.full((7, 64), 0.5)), k=1, seed=2)
    try:
        before = samples(scrape(server.metrics_url))
        with ThreadPoolExecutor(max_workers=2) as pool:
            running = pool.submit(server.stub.Elbo, heavy, timeout=120)
            wait_for_elbo_in_flight(server, lambda calls: calls >= 1, "the heavy call never arrived")
            with pytest.raises(grpc.RpcError) as caught:
                server.stub.Elbo(hurried, timeout=0.05)  # queued behind the heavy call, expires there
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(running.result().iwae) == 1024
        after = samples(scrape(server.metrics_url))
        key = ("vae_batch_rows_sum", (("kind", "elbo"),))
        assert after[key] - before.get(key, 0.0) == 1024 * 200  # the 7 hurried rows never ran
        assert after[ELBO_IN_FLIGHT] == 0
        assert after[("vae_queue_rows", (("kind", "elbo"), ("model", "digits:1")))] == 0
    finally:
        assert server.stop() == 0


def test_client_cancellation_releases_everything(digits_bundle):
    server = start_server("--bundle", str(digits_bundle), "--worker-threads", "1")
    x = tensor(np.random.default_rng(0).random((1024, 64)))
    try:
        calls = [server.stub.Elbo.future(vae_pb2.ElboRequest(x=x, k=200, seed=seed), timeout=120) for seed in range(4)]
        wait_for_elbo_in_flight(server, lambda calls: calls >= 4, "calls never arrived")
        for call in calls:
            call.cancel()
        wait_for_elbo_in_flight(server, lambda calls: calls == 0, "cancelled calls still counted in flight")
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_requests_total", (("code", "CANCELLED"), ("method", "Elbo")))] == 4
        assert counted[("vae_queue_rows", (("kind", "elbo"), ("model", "digits:1")))] == 0
        assert server.health_status() == SERVING
        assert len(server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5))), timeout=30).elbo) == 1
    finally:
        assert server.stop() == 0
