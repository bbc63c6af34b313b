"""grpc.aio's own log line for a stream whose client went away, made one throttled line.

When a client cancels a server stream (or its connection drops) while gRPC is sending a reply
message, grpc.aio logs ``ExecuteBatchError raised in core by servicer method [...]`` at ERROR with a
traceback through its Cython code, once per such stream. Nothing is wrong in the server: the call
is counted CANCELLED by the interceptor. But each line costs a traceback, and a client that opens
and drops streams in a loop could flood the log with them. This filter turns those records into one
INFO line per interval, with how many were held back, and no traceback.
"""

import logging

from vae_serve.service.observe.logs import LogThrottle

GRPC_LOGGER = "grpc._cython.cygrpc"
SEND_FAILED = "ExecuteBatchError raised in core by servicer method"
LOG_INTERVAL_S = 10.0


class StreamGoneFilter(logging.Filter):
    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.throttle = LogThrottle(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(SEND_FAILED)):
            return True
        held_back = self.throttle.admit()
        if held_back is None:
            return False
        method = record.getMessage().removeprefix(SEND_FAILED).strip()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg = "a client went away while its stream %s was being sent (%d more since the last such line)"
        record.args = (method, held_back)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_gone_streams() -> None:
    """Install the filter on grpc.aio's logger, once per process."""
    logger = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(existing, StreamGoneFilter) for existing in logger.filters):
        logger.addFilter(StreamGoneFilter())
