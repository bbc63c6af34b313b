"""A small typed Python client (and the ``vae-client`` CLI) for the vae-serve gRPC API."""

from client.client import VaeClient, VaeClientError
from client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    SampleResult,
    ScoreResult,
)

__all__ = [
    "DecodeResult",
    "ElboResult",
    "EncodeResult",
    "SampleResult",
    "ScoreResult",
    "VaeClient",
    "VaeClientError",
]
