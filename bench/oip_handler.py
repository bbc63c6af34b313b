"""The handlers' own cost, without the transport: VaeService.Elbo against OIP ModelInfer (model
``<bundle>-elbo``), one row, k = 1, called in-process on a real plane (the server's own ``start`` and
``load_models``: batchers, inference threads, graphs) by C concurrent callers, in turn, for many
short rounds. Prints the lowest and median process CPU per call of each, and the median (and
quartiles) of the paired per-round differences: on a noisy machine the rounds drift, and a
difference taken a moment apart cancels the drift. At concurrency 1 a call runs inline on the event
loop (no batch, no thread), so the difference is exactly the extra work per call.

Both handlers get the request message already parsed and return the reply message unserialized;
the reply's serialization (what gRPC does next) is timed apart, per reply, in ``serialize_us``.
What this leaves out (HTTP/2, the interceptor, protobuf parsing) is the same code for both
services, so the difference here is the OIP binding's and the plane's own extra work per call.

    python bench/oip_handler.py --bundle models/digits [--concurrency 1 --calls 1000 --rounds 30]
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2  # noqa: E402
from vae_serve.api.v1 import vae_pb2  # noqa: E402
from vae_serve.service import server  # noqa: E402
from vae_serve.service.grpc.oip import InferenceServicer  # noqa: E402
from vae_serve.service.grpc.servicer import VaeServicer  # noqa: E402
from vae_serve.service.plane.inference import Inference  # noqa: E402
from vae_serve.service.plane.operations import Operations  # noqa: E402
from vae_serve.service.settings import Settings  # noqa: E402


class NoDeadline:
    """The one call both handlers make on their context."""

    @staticmethod
    def time_remaining() -> None:
        return None


def requests(bundle: str, num_features: int) -> tuple[vae_pb2.ElboRequest, oip_pb2.ModelInferRequest]:
    """The same row, k = 1 and seed 1 in each service's request (as bench/workloads.py sends them)."""
    x = np.random.default_rng(0).random((1, num_features), dtype=np.float32)
    elbo = vae_pb2.ElboRequest(x=vae_pb2.Tensor(shape=x.shape, data=x.tobytes()), k=1, seed=1)
    infer = oip_pb2.ModelInferRequest(model_name=f"{bundle}-elbo")
    infer.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    infer.raw_input_contents.append(x.tobytes())
    infer.parameters["k"].int64_param = 1
    infer.parameters["seed"].int64_param = 1
    return elbo, infer


async def cpu_per_call_us(call, concurrency: int, calls: int) -> float:
    async def caller(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(caller(calls // 6) for _ in range(concurrency)))  # warm-up
    before = time.process_time()
    await asyncio.gather(*(caller(calls) for _ in range(concurrency)))
    return (time.process_time() - before) / (calls * concurrency) * 1e6


async def measure(args: argparse.Namespace) -> dict:
    settings = Settings(bundle=args.bundle, port=0, metrics_port=None)
    running = await server.start(settings)
    try:
        await server.load_models(running, settings)
        operations = Operations(running.plane)
        vae = VaeServicer(operations, settings)
        oip = InferenceServicer(Inference(operations, settings, ready=lambda: True))
        manifest = running.plane.resolve("", "").bundle.manifest
        elbo, infer = requests(manifest.name, manifest.input.num_features)
        context = NoDeadline()
        handlers = {"vae": lambda: vae.Elbo(elbo, context), "oip": lambda: oip.ModelInfer(infer, context)}
        rounds = {name: [] for name in handlers}
        for _ in range(args.rounds):
            for name, call in handlers.items():
                rounds[name].append(await cpu_per_call_us(call, args.concurrency, args.calls))
        replies = {name: await call() for name, call in handlers.items()}
    finally:
        await running.server.stop(0)
    serialize_us = {
        name: min(timeit.repeat(reply.SerializeToString, number=20000, repeat=5)) / 20000 * 1e6
        for name, reply in replies.items()
    }
    differences = [oip - vae for oip, vae in zip(rounds["oip"], rounds["vae"], strict=True)]
    return {
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "lowest_cpu_us_per_call": {name: round(min(values), 1) for name, values in rounds.items()},
        "median_cpu_us_per_call": {name: round(statistics.median(values), 1) for name, values in rounds.items()},
        # Rounds alternate, so each difference is taken a moment apart: the machine's drift cancels.
        "oip_minus_vae_us": {
            "median": round(statistics.median(differences), 1),
            "quartiles": [round(value, 1) for value in statistics.quantiles(differences, n=4)[::2]],
        },
        "serialize_us": {name: round(value, 2) for name, value in serialize_us.items()},
        "reply_bytes": {name: reply.ByteSize() for name, reply in replies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000, help="calls per caller per round")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
