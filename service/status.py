"""The one table from the core's exceptions to status codes, and the text a client sees.

The codes are the canonical ones gRPC uses (``Code``, by the same names and numbers), without
importing grpc: the gRPC binding aborts with ``grpc.StatusCode[code.name]``, the REST binding maps
them to HTTP statuses, and metrics and spans of both are labelled with their names.

Handlers raise; the bindings ask ``status_for``. A class's code is looked up along its MRO, so a
subclass inherits its parent's. Anything not in the table is a bug: logged with its traceback and
answered INTERNAL with a fixed text, so no path or traceback reaches a client.
"""

import enum
import logging

from vae_serve.core import errors

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; the server log has the details"
MODEL_UNAVAILABLE_MESSAGE = "model unavailable; the server log has the details"


class Code(enum.IntEnum):
    """The canonical status codes (google.rpc.Code), as gRPC numbers them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


STATUS_CODES: dict[type[Exception], Code] = {
    errors.InvalidInput: Code.INVALID_ARGUMENT,
    errors.NotFound: Code.NOT_FOUND,
    errors.NotReady: Code.UNAVAILABLE,
    errors.Overloaded: Code.RESOURCE_EXHAUSTED,
    errors.DeadlineExpired: Code.DEADLINE_EXCEEDED,
    errors.NotCalibrated: Code.FAILED_PRECONDITION,
    errors.OutputInvalid: Code.INTERNAL,
    errors.BundleError: Code.FAILED_PRECONDITION,
}
# Their messages may name files on the server: logged, never sent.
PRIVATE_MESSAGES: dict[type[Exception], str] = {errors.BundleError: MODEL_UNAVAILABLE_MESSAGE}


def _listed_class(error: BaseException) -> type | None:
    """The nearest class of ``error`` (along its MRO) in the table, or None."""
    return next((cls for cls in type(error).__mro__ if cls in STATUS_CODES), None)


def code_for(error: BaseException) -> Code:
    """The status code of an exception, without logging anything (for the tracing of a call)."""
    listed = _listed_class(error)
    return Code.INTERNAL if listed is None else STATUS_CODES[listed]


def status_for(error: Exception) -> tuple[Code, str]:
    """(status code, message for the client) of an exception raised by a handler."""
    listed = _listed_class(error)
    if listed in PRIVATE_MESSAGES:
        log.error("%s answered %s: %s", type(error).__name__, STATUS_CODES[listed].name, error)
        return STATUS_CODES[listed], PRIVATE_MESSAGES[listed]
    if listed is not None:
        return STATUS_CODES[listed], str(error)
    log.error("unhandled %s, answered INTERNAL", type(error).__name__, exc_info=error)
    return Code.INTERNAL, INTERNAL_MESSAGE
