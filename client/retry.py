"""Retries of overloaded or unavailable calls: gRPC's own retry policy (gRFC A6), set in the service config.

Why gRPC's policy rather than a loop around each call: it already does everything a hand-written
loop would have to get right, for every rpc (unary, and a stream until its first message):

- exponential backoff with full jitter: the n-th retry waits random(0, min(initial * multiplier^(n-1),
  max)) seconds;
- the server's pushback: a ``grpc-retry-pushback-ms`` trailer (vae-serve sends 100 with every
  RESOURCE_EXHAUSTED from its queue bound) replaces that wait; a negative or malformed one means
  "do not retry";
- the call's deadline bounds all attempts together, so a retried call never outlives ``timeout_s``;
- attempts that never left the client (the connection refused) and attempts the server refused count
  alike, so a restarting server is waited out.

Its limits, accepted here: at most 5 attempts (gRPC caps maxAttempts at 5), no hook to count or log
the retries of one call (the server's ``vae_requests_total`` counts every attempt), and a request
is retried only while it fits the per-call retry buffer, which the client raises from its 256 KiB
default to the largest message it sends.
"""

import json
from dataclasses import dataclass

# The services whose calls are retried. Health is left out: a health check should report what it
# sees now, not wait out an outage.
RETRIED_SERVICES = ("vae.v1.VaeService",)
# Only statuses that say "the same request may succeed later". INVALID_ARGUMENT, NOT_FOUND and the
# like would fail again; DEADLINE_EXCEEDED has spent the time a retry would need.
RETRYABLE_CODES = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")
GRPC_MAX_ATTEMPTS = 5  # gRFC A6: larger values are treated as 5


@dataclass(frozen=True)
class RetryPolicy:
    """How VaeClient retries RESOURCE_EXHAUSTED and UNAVAILABLE (see the module docstring).

    Attributes:
        max_attempts: Attempts per call, the first included: 2 to 5 (gRPC's limit); 1 turns retries off.
        initial_backoff_s: The first retry waits a random time in [0, this).
        max_backoff_s: No wait is drawn from a range wider than this.
        backoff_multiplier: Each retry's range is this many times the previous one's.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= GRPC_MAX_ATTEMPTS:
            raise ValueError(f"max_attempts: {self.max_attempts}; allowed 1..{GRPC_MAX_ATTEMPTS} (gRPC's limit)")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("backoffs: need 0 < initial_backoff_s <= max_backoff_s")
        if not self.backoff_multiplier > 0:
            raise ValueError(f"backoff_multiplier: {self.backoff_multiplier} must be > 0")

    def service_config(self) -> str:
        """The JSON service config that asks gRPC for this policy on RETRIED_SERVICES."""
        method_config = {"name": [{"service": service} for service in RETRIED_SERVICES]}
        if self.max_attempts > 1:
            method_config["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                # Durations in the proto3 JSON form; 9 decimals keep nanoseconds, the form's limit.
                "initialBackoff": f"{self.initial_backoff_s:.9f}s",
                "maxBackoff": f"{self.max_backoff_s:.9f}s",
                "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": list(RETRYABLE_CODES),
            }
        return json.dumps({"methodConfig": [method_config]})


DEFAULT_RETRY = RetryPolicy()  # frozen: one instance serves every client


def channel_options(policy: RetryPolicy | None, max_message_bytes: int) -> list[tuple[str, object]]:
    """gRPC channel options for ``policy`` (None, or one attempt: no policy, so only gRPC's transparent
    retries of calls that never reached a server, as without this module).

    Args:
        policy: The retry policy, or None.
        max_message_bytes: The largest request the client sends: the retry buffer must hold it, or
            gRPC quietly stops retrying calls with larger requests.
    """
    if policy is None or policy.max_attempts == 1:
        return []
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", policy.service_config()),
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
    ]
