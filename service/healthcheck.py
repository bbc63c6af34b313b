"""Container health check: exit 0 only if the server's gRPC health service says SERVING, else 1.

Docker's HEALTHCHECK runs this (``vae-healthcheck``); it speaks grpc.health.v1 like Kubernetes'
native gRPC probes, so the image needs no separate probe binary. With no flags it asks the local
server on ``VAE_PORT`` (the port the container's server reads too) about the whole server.
"""

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vae_serve.core.defaults import DEFAULT_PORT

TIMEOUT_S = 3.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-healthcheck",
        description="Exit 0 only if a vae-serve health service reports SERVING, else 1 (plaintext gRPC).",
    )
    parser.add_argument(
        "--target",
        default=f"127.0.0.1:{os.environ.get('VAE_PORT', DEFAULT_PORT)}",
        metavar="HOST:PORT",
        help=f"server to ask (default: %(default)s, from VAE_PORT or {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help='health service name, e.g. vae.v1.VaeService (default: "", the whole server)',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of the check (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    request = health_pb2.HealthCheckRequest(service=args.service)
    with grpc.insecure_channel(args.target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{args.target}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
