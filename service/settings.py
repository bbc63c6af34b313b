"""Every server setting in one typed class. Each can be set by a ``VAE_<NAME>`` environment
variable (e.g. ``VAE_PORT=8001``) or by the matching ``vae-serve`` flag, which wins.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAE_", frozen=True, extra="forbid")

    bundle: Path | None = None
    """One bundle directory to serve. Exactly one of ``bundle`` and ``model_repository`` is set."""

    model_repository: Path | None = None
    """A directory of ``<name>/<version>/`` bundles; every version is loaded, the latest is the default."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds. Use 0.0.0.0 in a container."""

    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 binds a free port, printed on stdout as ``vae-serve listening on HOST:PORT``."""

    metrics_port: int | None = Field(default=9090, ge=0, le=65535)
    """Prometheus /metrics port (0: a free port, printed; unset with ``--no-metrics``)."""

    metrics_host: str | None = None
    """Address of the metrics endpoint; defaults to ``host``."""

    processes: int = Field(default=1, ge=1)
    """Server processes sharing the gRPC port through SO_REUSEPORT, to use more than one core; the
    kernel spreads connections over them. Each loads the models and batches on its own; process i
    serves metrics on metrics_port + i (each on a free port when metrics_port is 0)."""

    reuse_port: bool = False
    """Bind the gRPC port with SO_REUSEPORT (set for the processes of ``processes`` > 1). Off
    otherwise, so that a second server on a taken port fails instead of silently sharing it."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """ONNX Runtime device: cuda fails at start if the CUDA provider is unavailable; auto falls back to CPU."""

    intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime threads per graph run (0: ORT's default). One thread per run lets concurrent
    requests use the cores instead of fighting over them."""

    worker_threads: int = Field(default=4, ge=1)
    """Threads that run inference, so the event loop never blocks on ONNX Runtime."""

    reflection: bool = True
    """Serve gRPC server reflection (grpcurl and similar tools rely on it)."""

    grace_s: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""

    max_batch_rows: int = Field(default=8192, ge=1)
    """Dynamic batching: most rows the graphs process in one batch (an Elbo request of n rows and k
    samples counts n x k). Concurrent requests of one kind and model are stacked up to this; 1
    turns batching off. A single request above it still runs, alone."""

    max_batch_wait_s: float = Field(default=0.002, ge=0.0)
    """Longest a batch may wait for more requests after its first arrived. 0: run as soon as a
    runner is free; requests arriving meanwhile still form the next batch."""

    batch_wait: Literal["adaptive", "fixed"] = "adaptive"
    """adaptive: a batch waits (up to max_batch_wait_s) only for as many requests as there are
    concurrent callers to expect, so a lone client never waits; fixed: always the full wait."""

    batch_runners: int = Field(default=1, ge=1)
    """Batches of one kind and model that may run at once. One is fastest when the process has one
    core (measured in docs/benchmarks.md): runs then queue up and batches grow; use --processes to
    use more cores."""

    max_queue_rows: int = Field(default=1_048_576, ge=1)
    """Rows (cost as above) that may wait per kind and model; beyond it requests get RESOURCE_EXHAUSTED at once."""

    max_rows: int = Field(default=1024, ge=1)
    """Most rows (examples or latents) in one request."""

    max_k: int = Field(default=1000, ge=1)
    """Most importance samples per example (Elbo k, Encode/Decode num_samples)."""

    max_row_samples: int = Field(default=262_144, ge=1)
    """Most rows x samples one request may make the decoder process."""

    max_sample_n: int = Field(default=4096, ge=1)
    """Most samples in one unary Sample reply."""

    max_stream_sample_n: int = Field(default=1_000_000, ge=1)
    """Most samples in one SampleStream call."""

    default_chunk_size: int = Field(default=1024, ge=1)
    """Rows per SampleStream message when the request leaves chunk_size at 0."""

    max_receive_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request accepted; larger ones get RESOURCE_EXHAUSTED."""

    max_send_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest reply the server sends."""

    @field_validator("bundle", "model_repository", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        # An image that bakes in VAE_BUNDLE is switched to a mounted repository with VAE_BUNDLE=.
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_source(self) -> "Settings":
        if (self.bundle is None) == (self.model_repository is None):
            raise ValueError("set exactly one of --bundle / VAE_BUNDLE and --model-repository / VAE_MODEL_REPOSITORY")
        return self
