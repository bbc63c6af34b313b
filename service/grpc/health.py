"""grpc.health.v1, with a drain that ends Watch streams.

grpcio-health-checking's asyncio servicer keeps every Watch stream open forever, so a graceful
stop would wait out its whole grace period for them. This one is small enough to own: ``drain``
sets every service NOT_SERVING, each Watch stream sends that status and then ends, and the stop
waits only for real calls.
"""

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    async def set(self, service: str, status: int) -> None:
        """Set a service's status; ignored once draining (a drain is final)."""
        async with self._changed:
            if not self._draining:
                self._statuses[service] = status
                self._changed.notify_all()

    async def drain(self) -> None:
        """Every service NOT_SERVING from now on, and every Watch stream ends after saying so."""
        async with self._changed:
            self._draining = True
            self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)
            self._changed.notify_all()

    async def Check(self, request, context):
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        last = None
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda seen=last: self._draining or self._statuses.get(request.service, SERVICE_UNKNOWN) != seen
                )
                status = self._statuses.get(request.service, SERVICE_UNKNOWN)
                draining = self._draining
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if draining:
                return
