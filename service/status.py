"""The one table from the core's exceptions to gRPC status codes, and the text a client sees.

Handlers raise; the interceptor asks ``status_for``. A class's code is looked up along its MRO, so a
subclass inherits its parent's. Anything not in the table is a bug: logged with its traceback and
answered INTERNAL with a fixed text, so no path or traceback reaches a client.
"""

import logging

import grpc

from vae_serve.core import errors

log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error; the server log has the details"
MODEL_UNAVAILABLE_MESSAGE = "model unavailable; the server log has the details"

STATUS_CODES: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.NotCalibrated: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutputInvalid: grpc.StatusCode.INTERNAL,
    errors.BundleError: grpc.StatusCode.FAILED_PRECONDITION,
}
# Their messages may name files on the server: logged, never sent.
PRIVATE_MESSAGES: dict[type[Exception], str] = {errors.BundleError: MODEL_UNAVAILABLE_MESSAGE}


def _listed_class(error: BaseException) -> type | None:
    """The nearest class of ``error`` (along its MRO) in the table, or None."""
    return next((cls for cls in type(error).__mro__ if cls in STATUS_CODES), None)


def code_for(error: BaseException) -> grpc.StatusCode:
    """The status code of an exception, without logging anything (for the tracing of a call)."""
    listed = _listed_class(error)
    return grpc.StatusCode.INTERNAL if listed is None else STATUS_CODES[listed]


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """(status code, message for the client) of an exception raised by a handler."""
    listed = _listed_class(error)
    if listed in PRIVATE_MESSAGES:
        log.error("%s answered %s: %s", type(error).__name__, STATUS_CODES[listed].name, error)
        return STATUS_CODES[listed], PRIVATE_MESSAGES[listed]
    if listed is not None:
        return STATUS_CODES[listed], str(error)
    log.error("unhandled %s, answered INTERNAL", type(error).__name__, exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
