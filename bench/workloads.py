"""The benchmark workloads, and how each target protocol expresses them.

A workload is one kind of request, repeated. Each protocol adapter turns it into a coroutine
factory: ``call()`` sends one request and returns the number of rows (examples or samples) it
covered. Protocols: ``vae`` (vae-serve, or the echo server, which speaks the same API),
``kserve`` (Triton and MLServer through the Open Inference Protocol's ModelInfer), ``oip`` (vae-serve's
own ModelInfer over gRPC) and ``rest`` / ``rest-binary`` (vae-serve's REST binding, JSON tensors or
the binary-data extension; the target is the ``--http-port`` address).
"""

import json
from dataclasses import dataclass

import grpc
import numpy as np

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc


@dataclass(frozen=True)
class Workload:
    name: str
    rpc: str  # Elbo, Encode, ScoreAnomaly or SampleStream
    rows: int  # examples per request, or samples for SampleStream
    k: int = 1
    description: str = ""


WORKLOADS = {
    workload.name: workload
    for workload in (
        Workload("elbo_b1_k1", "Elbo", 1, 1, "Elbo, batch 1, k=1"),
        Workload("elbo_b1_k100", "Elbo", 1, 100, "Elbo, batch 1, k=100 (IWAE)"),
        Workload("elbo_b256", "Elbo", 256, 1, "Elbo, batch 256, k=1"),
        Workload("encode_b1", "Encode", 1, 1, "Encode, batch 1"),
        Workload("score_b1", "ScoreAnomaly", 1, 1, "ScoreAnomaly (default score), batch 1"),
        Workload("score_b256", "ScoreAnomaly", 256, 1, "ScoreAnomaly (default score), batch 256"),
        Workload("sample_10000", "SampleStream", 10_000, 1, "SampleStream, n=10,000"),
    )
}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def inputs(workload: Workload, num_features: int, seed: int = 0) -> np.ndarray:
    """Inputs in [0, 1], like the digits and Fashion-MNIST data."""
    return np.random.default_rng(seed).random((workload.rows, num_features), dtype=np.float32)


def vae_caller(channel: grpc.aio.Channel, workload: Workload, num_features: int):
    """A coroutine factory for vae-serve's own API (also spoken by the echo server)."""
    stub = vae_pb2_grpc.VaeServiceStub(channel)
    if workload.rpc == "SampleStream":
        request = vae_pb2.SampleRequest(n=workload.rows, seed=1, chunk_size=1000)

        async def call() -> int:
            rows = 0
            async for chunk in stub.SampleStream(request):
                rows += chunk.z.shape[0]
            return rows

        return call
    x = inputs(workload, num_features)
    tensor = vae_pb2.Tensor(shape=x.shape, data=x.tobytes())
    if workload.rpc == "Encode":
        request, method = vae_pb2.EncodeRequest(x=tensor), stub.Encode
    elif workload.rpc == "ScoreAnomaly":
        request, method = vae_pb2.ScoreAnomalyRequest(x=tensor, seed=1), stub.ScoreAnomaly
    else:
        request, method = vae_pb2.ElboRequest(x=tensor, k=workload.k, seed=1), stub.Elbo

    async def call() -> int:
        await method(request)
        return workload.rows

    return call


def kserve_caller(channel: grpc.aio.Channel, workload: Workload, num_features: int):
    """A coroutine factory for an Open Inference Protocol server (Triton, MLServer)."""
    from vae_serve.api.oip import grpc_service_pb2 as service_pb2
    from vae_serve.api.oip import grpc_service_pb2_grpc as service_pb2_grpc

    if workload.rpc in ("SampleStream", "ScoreAnomaly"):
        raise NotImplementedError("the peers serve no streaming sampler and no calibrated scores")
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    model = "vae_encode" if workload.rpc == "Encode" else f"vae_elbo_k{workload.k}"
    x = inputs(workload, num_features)
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())

    async def call() -> int:
        await stub.ModelInfer(request)
        return workload.rows

    return call


def oip_caller(channel: grpc.aio.Channel, workload: Workload, num_features: int, bundle: str = "digits"):
    """vae-serve's Open Inference Protocol over gRPC: ``<bundle>-elbo`` with the parameter k."""
    from vae_serve.api.oip import grpc_service_pb2 as service_pb2
    from vae_serve.api.oip import grpc_service_pb2_grpc as service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    x = inputs(workload, num_features)
    part = {"Elbo": "elbo", "Encode": "encoder"}[workload.rpc]
    request = service_pb2.ModelInferRequest(model_name=f"{bundle}-{part}")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    if part == "elbo":
        request.parameters["k"].int64_param = workload.k
        request.parameters["seed"].int64_param = 1

    async def call() -> int:
        await stub.ModelInfer(request)
        return workload.rows

    return call


def rest_caller(session, base_url: str, workload: Workload, num_features: int, binary: bool, bundle: str = "digits"):
    """vae-serve's REST binding (an ``aiohttp.ClientSession``): the same calls as ``oip_caller``."""
    x = inputs(workload, num_features)
    part = {"Elbo": "elbo", "Encode": "encoder"}[workload.rpc]
    url = f"{base_url}/v2/models/{bundle}-{part}/infer"
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    document = {"inputs": [tensor], "parameters": {"k": workload.k, "seed": 1} if part == "elbo" else {}}
    if binary:
        tensor["parameters"] = {"binary_data_size": x.nbytes}
        document["parameters"]["binary_data_output"] = True
        header = json.dumps(document).encode()
        body = header + x.tobytes()
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    else:
        tensor["data"] = x.ravel().tolist()
        body, headers = json.dumps(document).encode(), {"Content-Type": "application/json"}

    async def call() -> int:
        async with session.post(url, data=body, headers=headers) as response:
            response.raise_for_status()
            await response.read()
        return workload.rows

    return call


CALLERS = {"vae": vae_caller, "kserve": kserve_caller, "oip": oip_caller}
REST_PROTOCOLS = ("rest", "rest-binary")
