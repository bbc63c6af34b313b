"""A small typed Python client (and the ``vae-client`` CLI) for the vae-serve gRPC API."""

from vae_serve.client.client import VaeClient, VaeClientError
from vae_serve.client.results import (
    DecodeResult,
    ElboResult,
    EncodeResult,
    InterpolateResult,
    Piece,
    SampleResult,
    ScoreResult,
)
from vae_serve.client.retry import RetryPolicy
from vae_serve.client.split import piece_seed

__all__ = [
    "DecodeResult",
    "ElboResult",
    "EncodeResult",
    "InterpolateResult",
    "Piece",
    "RetryPolicy",
    "SampleResult",
    "ScoreResult",
    "VaeClient",
    "VaeClientError",
    "piece_seed",
]
