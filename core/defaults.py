"""Defaults that the server, the client and the health check must agree on, defined once.

Plain constants and no imports, so that ``vae-client`` and ``vae-healthcheck`` can read them without
loading the server, and vae_serve.core stays free of grpc and OpenTelemetry.
"""

DEFAULT_PORT = 50051
"""gRPC port the server binds (``--port``), and the one the client and the health check ask."""

MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""Largest request message the server accepts (``--max-receive-message-bytes``)."""

MAX_REPLY_BYTES = 64 * 1024 * 1024
"""Largest reply message the server sends (``--max-send-message-bytes``); also the client's own
message limit, both ways."""
