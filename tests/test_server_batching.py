"""Dynamic batching in a real server: replies are the same as unbatched ones, batches really form,
and a full queue answers RESOURCE_EXHAUSTED while accepted calls complete.
"""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tests.server_process import SERVING, start_server, tensor
from tests.test_server_lifecycle import samples, scrape
from vae.v1 import vae_pb2


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


def test_full_queue_rejects_at_once_and_accepted_calls_complete(digits_bundle):
    # One runner, one worker thread, a queue of 3 heavy calls (each 1024 rows x 100 samples).
    server = start_server(
        "--bundle",
        str(digits_bundle),
        "--batch-runners",
        "1",
        "--worker-threads",
        "1",
        "--max-batch-rows",
        "102400",
        "--max-queue-rows",
        str(3 * 102400),
    )
    x = np.random.default_rng(0).random((1024, 64), dtype=np.float32)
    calls = [vae_pb2.ElboRequest(x=tensor(x), k=100, seed=seed) for seed in range(12)]
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(server.stub.Elbo, request, timeout=120) for request in calls]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except grpc.RpcError as error:
                    outcomes.append(error)
        rejected = [outcome for outcome in outcomes if isinstance(outcome, grpc.RpcError)]
        accepted = [outcome for outcome in outcomes if not isinstance(outcome, grpc.RpcError)]
        assert rejected and accepted, "12 heavy calls against a queue of 3 must see both outcomes"
        for error in rejected:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in error.details()
        for reply in accepted:
            assert len(reply.iwae) == 1024 and np.all(np.isfinite(reply.iwae))
        assert server.health_status() == SERVING
        counted = samples(scrape(server.metrics_url))
        assert counted[("vae_requests_total", (("code", "RESOURCE_EXHAUSTED"), ("method", "Elbo")))] == len(rejected)
        assert counted[("vae_queue_rows", (("kind", "elbo"), ("model", "digits:1")))] == 0
    finally:
        assert server.stop() == 0
