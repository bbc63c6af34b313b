"""The layout's own test (STYLE.md): follow requests from their handler to ONNX Runtime and back, and
check that no call ever re-enters a module of ours that the walk has already left.

The real server runs in this process (so a profiler sees every frame, on the event loop and on the
inference threads) and real gRPC calls go to it. At every call into a vae_serve module, the chain of
vae_serve modules on the stack (consecutive frames of one module counted once) must not name any
module twice: an A -> B -> A chain is a round trip through A.
"""

import asyncio
import sys
import threading

import aiohttp
import grpc

from tests.server_process import tensor
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.export.sources import load_source, make_splits
from vae_serve.service import server
from vae_serve.service.settings import Settings


class ModuleChains:
    """A profile hook recording, for each call into vae_serve, the chain of our modules on the stack."""

    def __init__(self) -> None:
        self.recording = False
        self.chains: set[tuple[str, ...]] = set()

    def __call__(self, frame, event, arg) -> None:
        if not self.recording or event != "call" or not frame.f_globals.get("__name__", "").startswith("vae_serve."):
            return
        chain: list[str] = []
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("vae_serve.") and (not chain or chain[-1] != module):
                chain.append(module)
            frame = frame.f_back
        self.chains.add(tuple(reversed(chain)))

    def round_trips(self) -> list[tuple[str, ...]]:
        return sorted(chain for chain in self.chains if len(set(chain)) != len(chain))

    def modules(self) -> set[str]:
        return {module for chain in self.chains for module in chain}


def test_no_request_returns_to_a_module_it_has_left(digits_bundle):
    chains = ModuleChains()
    x = make_splits(load_source("digits")).test.x[:5]

    async def scenario() -> None:
        settings = Settings(bundle=digits_bundle, port=0, metrics_port=None)
        running = await server.start(settings)
        try:
            await server.load_models(running, settings)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = vae_pb2_grpc.VaeServiceStub(channel)
                chains.recording = True
                await stub.Elbo(vae_pb2.ElboRequest(x=tensor(x), k=10, seed=1))
                await stub.ScoreAnomaly(
                    vae_pb2.ScoreAnomalyRequest(x=tensor(x), score=vae_pb2.SCORE_TYPE_COMPLEXITY_CORRECTED)
                )
                await stub.ScoreAnomaly(vae_pb2.ScoreAnomalyRequest(x=tensor(x), return_feature_errors=True))
                await stub.Interpolate(vae_pb2.InterpolateRequest(x_start=tensor(x[:2]), x_end=tensor(x[2:4]), steps=5))
                async for _ in stub.SampleStream(vae_pb2.SampleRequest(n=6, chunk_size=2, seed=3)):
                    pass
                chains.recording = False
        finally:
            await server.drain(running, 0)

    sys.setprofile(chains)
    threading.setprofile(chains)  # the inference threads, started after this
    try:
        asyncio.run(scenario())
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    # The walk reached ONNX Runtime's wrapper through the data plane and the batcher ...
    assert {
        "vae_serve.service.grpc.servicer",
        "vae_serve.service.plane.dataplane",
        "vae_serve.service.plane.batching",
        "vae_serve.core.work",
        "vae_serve.core.bounds",
        "vae_serve.core.scores",
        "vae_serve.core.runtime",
    } <= chains.modules()
    # ... and never came back through a module it had left.
    assert chains.round_trips() == []


def walk_of_each_call(digits_bundle) -> dict[str, ModuleChains]:
    """The module chains of three calls of the same ELBO: VaeService.Elbo, OIP ModelInfer over gRPC
    and OIP infer over REST, each recorded alone."""
    x = make_splits(load_source("digits")).test.x[:5]
    walks = {name: ModuleChains() for name in ("Elbo", "ModelInfer", "REST infer")}

    async def scenario() -> None:
        settings = Settings(bundle=digits_bundle, port=0, metrics_port=None, http_port=0)
        running = await server.start(settings)
        try:
            await server.load_models(running, settings)
            infer = oip_pb2.ModelInferRequest(model_name="digits-elbo")
            infer.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
            infer.raw_input_contents.append(x.astype("<f4").tobytes())
            infer.parameters["k"].int64_param = 10
            body = {
                "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
                "parameters": {"k": 10},
            }
            url = f"http://127.0.0.1:{running.http.port}/v2/models/digits-elbo/infer"
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
                aiohttp.ClientSession() as session,
            ):

                async def rest() -> None:
                    async with session.post(url, json=body) as reply:
                        assert reply.status == 200, await reply.text()

                calls = {
                    "Elbo": lambda: vae_pb2_grpc.VaeServiceStub(channel).Elbo(
                        vae_pb2.ElboRequest(x=tensor(x), k=10, seed=1)
                    ),
                    "ModelInfer": lambda: oip_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer),
                    "REST infer": rest,
                }
                for name, call in calls.items():
                    walks[name].recording = True
                    await call()
                    walks[name].recording = False
        finally:
            await server.drain(running, 0)

    profile = Profiles(walks)
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        asyncio.run(scenario())
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return walks


class Profiles:
    """Hands each profile event to every ``ModuleChains`` (only the one recording keeps it)."""

    def __init__(self, walks: dict[str, ModuleChains]) -> None:
        self.walks = list(walks.values())

    def __call__(self, frame, event, arg) -> None:
        for walk in self.walks:
            walk(frame, event, arg)


def test_oip_calls_take_no_longer_road_than_vae_service(digits_bundle):
    walks = walk_of_each_call(digits_bundle)
    visited = {name: walk.modules() for name, walk in walks.items()}
    # Each protocol reached ONNX Runtime through the plane's operations and the batcher ...
    for modules in visited.values():
        assert {
            "vae_serve.service.plane.operations",
            "vae_serve.service.plane.batching",
            "vae_serve.core.runtime",
        } <= modules
    # ... REST without passing through the gRPC binding, and never re-entering a module it had left ...
    assert not any(module.startswith("vae_serve.service.grpc.") for module in visited["REST infer"])
    assert {name: walk.round_trips() for name, walk in walks.items()} == {name: [] for name in walks}
    # ... and neither OIP binding visits more modules than a VaeService call.
    assert len(visited["ModelInfer"]) <= len(visited["Elbo"])
    assert len(visited["REST infer"]) <= len(visited["Elbo"])
