"""VaeClientError: what every failed call raises, with the gRPC status name and the server's message."""

import contextlib
from collections.abc import Iterator

import grpc


class VaeClientError(Exception):
    """A failed call: the gRPC status name (e.g. "INVALID_ARGUMENT") and the server's message.

    Attributes:
        code_name: The status name, e.g. "NOT_FOUND".
        details: The server's explanation.
        code: The original ``grpc.StatusCode``, when there was one.
    """

    def __init__(self, code_name: str, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"{code_name}: {details}")
        self.code_name = code_name
        self.details = details
        self.code = code


def data_loss(details: str) -> VaeClientError:
    """A reply that does not hold what the rpc promises (DATA_LOSS)."""
    return VaeClientError("DATA_LOSS", details, grpc.StatusCode.DATA_LOSS)


@contextlib.contextmanager
def translate_rpc_errors() -> Iterator[None]:
    """Re-raise any grpc.RpcError as a VaeClientError, keeping its status code."""
    try:
        yield
    except grpc.RpcError as err:
        # A plain RpcError (not a grpc.Call) has no code(); the sync stubs always raise Calls.
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        raise VaeClientError(code.name, details or "", code) from err
