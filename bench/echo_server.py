"""The physical limit of a Python gRPC server here: vae-serve's API on grpc.aio, doing no work.

Each reply has exactly the size and shape vae-serve's would (zeros in place of values), so the
difference to vae-serve is the cost of decoding, checking, batching and computing.

    python bench/echo_server.py --port 0 --num-features 64 --latent-dim 8
"""

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workloads import CHANNEL_OPTIONS
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc


def zeros(*shape: int) -> vae_pb2.Tensor:
    return vae_pb2.Tensor(shape=shape, data=bytes(4 * int(np.prod(shape))))


class EchoServicer(vae_pb2_grpc.VaeServiceServicer):
    def __init__(self, num_features: int, latent_dim: int) -> None:
        self.num_features = num_features
        self.latent_dim = latent_dim

    async def Elbo(self, request, context):
        rows, k = request.x.shape[0], request.k or 1
        values = np.zeros(rows)
        reply = vae_pb2.ElboResponse(
            elbo=values, reconstruction=values, kl=values, elbo_bits_per_dim=values, k=k, seed=1
        )
        if k > 1:
            reply.iwae.extend(values)
            reply.iwae_standard_error.extend(values)
            reply.iwae_bits_per_dim.extend(values)
        reply.model.name, reply.model.version = "echo", "1"
        return reply

    async def ScoreAnomaly(self, request, context):
        rows = request.x.shape[0]
        values = np.zeros(rows)
        return vae_pb2.ScoreAnomalyResponse(
            model=vae_pb2.ModelVersion(name="echo", version="1"),
            score=vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR,
            scores=values,
            percentile=values,
            p_value=values,
            is_anomaly=np.zeros(rows, bool),
            threshold=0.0,
            false_positive_rate=0.01,
            seed=1,
        )

    async def Encode(self, request, context):
        rows = request.x.shape[0]
        return vae_pb2.EncodeResponse(
            z_mean=zeros(rows, self.latent_dim), z_logvar=zeros(rows, self.latent_dim), seed=1
        )

    async def SampleStream(self, request, context):
        chunk = request.chunk_size or 1024
        for offset in range(0, request.n, chunk):
            rows = min(chunk, request.n - offset)
            yield vae_pb2.SampleResponse(
                z=zeros(rows, self.latent_dim),
                x_mean=zeros(rows, self.num_features),
                x=zeros(rows, self.num_features),
                seed=1,
                offset=offset,
            )


async def serve(port: int, num_features: int, latent_dim: int) -> None:
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    vae_pb2_grpc.add_VaeServiceServicer_to_server(EchoServicer(num_features, latent_dim), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--num-features", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.num_features, args.latent_dim))


if __name__ == "__main__":
    main()
