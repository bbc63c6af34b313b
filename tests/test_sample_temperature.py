"""Sample and SampleStream bound the temperature at the request's edge: a value outside
(0, MAX_TEMPERATURE] is INVALID_ARGUMENT with the allowed range, never a non-finite sample answered
INTERNAL with numpy's warnings in the log. Against a real server process.
"""

import grpc
import numpy as np
import pytest

from tests.server_process import SERVING
from vae_serve.api.v1 import vae_pb2
from vae_serve.service.plane.operations import MAX_TEMPERATURE


def sample(server, rpc: str, temperature: float) -> list[vae_pb2.SampleResponse]:
    request = vae_pb2.SampleRequest(n=8, seed=3, temperature=temperature, chunk_size=4)
    if rpc == "Sample":
        return [server.stub.Sample(request, timeout=30)]
    return list(server.stub.SampleStream(request, timeout=30))


def floats(tensor: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype="<f4")


@pytest.mark.parametrize("rpc", ["Sample", "SampleStream"])
@pytest.mark.parametrize("temperature", [1e300, 1e38, MAX_TEMPERATURE * (1 + 1e-9), 11.0, float("inf")])
def test_a_temperature_beyond_the_bound_is_invalid_argument(server, rpc, temperature):
    with pytest.raises(grpc.RpcError) as caught:
        sample(server, rpc, temperature)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"temperature: {temperature} must be a finite number in (0, 10]")
    assert server.health_status() == SERVING


@pytest.mark.parametrize("rpc", ["Sample", "SampleStream"])
@pytest.mark.parametrize("temperature", [MAX_TEMPERATURE, 1e-30])
def test_temperatures_at_the_edges_of_the_range_sample(server, rpc, temperature):
    replies = sample(server, rpc, temperature)
    assert sum(reply.z.shape[0] for reply in replies) == 8
    for reply in replies:
        assert np.isfinite(floats(reply.z)).all() and np.isfinite(floats(reply.x_mean)).all()
    z = np.concatenate([floats(reply.z) for reply in replies])
    assert np.abs(z).max() <= temperature * 10  # z = temperature * N(0, 1): within 10 of its scale


def test_no_numpy_warning_reaches_the_log(server):
    for rpc in ("Sample", "SampleStream"):
        with pytest.raises(grpc.RpcError):
            sample(server, rpc, 1e300)
    log = server.log()
    assert "RuntimeWarning" not in log and "overflow" not in log
