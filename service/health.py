"""grpc.health.v1 with a drain that also ends Watch streams.

The stock asyncio HealthServicer keeps every Watch stream open forever, so a graceful stop would
wait out its whole grace period for them. Here ``close_watches`` ends each stream with a final
NOT_SERVING message, and the stop waits only for real calls.
"""

import asyncio
import contextlib

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DrainingHealthServicer(HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    async def Watch(self, request, context) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watch, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, closing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._closing.is_set():
            await context.write(health_pb2.HealthCheckResponse(status=NOT_SERVING))

    async def drain(self) -> None:
        """Every service NOT_SERVING from now on, and every Watch stream ended."""
        await self.enter_graceful_shutdown()
        self._closing.set()
