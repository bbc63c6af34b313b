"""Container health check: exit 0 only if the local server's gRPC health service says SERVING.

Docker's HEALTHCHECK runs this (``vae-healthcheck``); it speaks grpc.health.v1 like Kubernetes'
native gRPC probes, so the image needs no separate probe binary.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def main() -> int:
    address = f"127.0.0.1:{os.environ.get('VAE_PORT', '50051')}"
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
