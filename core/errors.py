"""What can go wrong with a request or a model, as plain exceptions with messages safe to show.

The core never speaks gRPC: which status each class becomes is decided in one table of the server
layer (``vae_serve.service.status``), so the exporter and any other user of the core can catch these
without grpcio.
"""


class VaeServeError(Exception):
    """Base class: a failure whose message describes the request's problem, for the caller."""


class InvalidInput(VaeServeError):
    """The request itself is wrong (shape, dtype, value range, parameter out of bounds)."""


class MalformedRequest(InvalidInput):
    """The request's bytes do not parse as the rpc's request message (a client bug, or a probe).

    Counted apart in the metrics and logged at most once per interval: a flood of garbage must not
    flood the log.
    """


class NotFound(VaeServeError):
    """The request names a model or version the server does not hold."""


class NotReady(VaeServeError):
    """The server is starting or draining, or the model version was just unloaded: retry."""


class Overloaded(VaeServeError):
    """The request queue is full; the client should retry later."""

    # Sent as the trailer grpc-retry-pushback-ms, which gRPC's own retry policy honours.
    retry_after_ms = 100


class DeadlineExpired(VaeServeError):
    """The call's deadline passed while it waited in the queue; it was not run."""


class NotCalibrated(VaeServeError):
    """The bundle has no calibration for the requested score (made before that score existed)."""


class OutputInvalid(VaeServeError):
    """The model produced non-finite values for this input; never returned as a success."""


class BundleError(VaeServeError):
    """A model bundle is missing, malformed or damaged; it must not be served.

    The message names the file and what differs, for the operator's log and the exporter's output.
    It may contain paths, so the server's status table never sends it to a client.
    """
