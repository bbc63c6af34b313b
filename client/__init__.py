"""A small typed Python client (and the ``vae-client`` CLI) for the vae-serve gRPC API."""

from vae_serve.client.client import VaeClient, VaeClientError
from vae_serve.client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    InterpolateResult,
    SampleResult,
    ScoreResult,
)

__all__ = [
    "DecodeResult",
    "ElboResult",
    "EncodeResult",
    "InterpolateResult",
    "SampleResult",
    "ScoreResult",
    "VaeClient",
    "VaeClientError",
]
