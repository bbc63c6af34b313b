"""Exceptions of the serving side, each naming the gRPC status it maps to.

The status is kept as a name (not a ``grpc.StatusCode``) so that this module, and everything that
raises these errors, stays importable without grpcio: the exporter uses the bundle loader too.
"""


class ServiceError(Exception):
    """Base class: a failure with a message that is safe to show to a client."""

    status_name = "INTERNAL"


class InvalidInput(ServiceError):
    """The request itself is wrong (shape, dtype, value range, parameter out of bounds)."""

    status_name = "INVALID_ARGUMENT"


class BundleError(ServiceError):
    """A model bundle is missing, malformed or damaged; the server must refuse to serve it.

    The message names the file and what differs, for the operator's log. It may contain paths,
    so a server reports it to clients only as a generic "model unavailable".
    """

    status_name = "FAILED_PRECONDITION"


class NotFound(ServiceError):
    """The request names a model or version the server does not hold."""

    status_name = "NOT_FOUND"


class NotReady(ServiceError):
    """The server is starting or draining."""

    status_name = "UNAVAILABLE"


class OutputInvalid(ServiceError):
    """The model produced non-finite values for this input; never returned as a success."""

    status_name = "INTERNAL"


class Overloaded(ServiceError):
    """The request queue is full; the client should retry later."""

    status_name = "RESOURCE_EXHAUSTED"
    # Sent as the trailer grpc-retry-pushback-ms, which gRPC's own retry policy honours.
    retry_after_ms = 100


class DeadlineExpired(ServiceError):
    """The call's deadline passed while it waited in the queue; it was not run."""

    status_name = "DEADLINE_EXCEEDED"


class NotCalibrated(ServiceError):
    """The bundle has no calibration for the requested score (made before that score existed)."""

    status_name = "FAILED_PRECONDITION"
