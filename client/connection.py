"""VaeClient's connection: the channel (message limits, retries, TLS, the bearer token), health, and
GetModelInfo, whose limits and score facts every row-wise call reads (asked once per client)."""

import collections
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.client.errors import translate_rpc_errors
from vae_serve.client.retry import RetryPolicy, channel_options
from vae_serve.core.defaults import MAX_REPLY_BYTES

# The client's limit both ways: it receives the largest reply a server sends by default, and sends
# requests up to the same size, so that a server with a lower limit, not the client, names it.
MAX_MESSAGE_BYTES = MAX_REPLY_BYTES


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (works on plaintext channels too,
    where gRPC's own call credentials are refused)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self.header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


def open_channel(
    target: str,
    retry: RetryPolicy | None,
    tls: bool = False,
    tls_ca: bytes | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A channel to ``target`` ("host:port"); the arguments are VaeClient's, which documents them.

    TLS is used when asked, or when any certificate is given; otherwise plaintext.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *channel_options(retry, MAX_MESSAGE_BYTES),
    ]
    if tls or tls_ca is not None or tls_cert is not None:
        credentials = grpc.ssl_channel_credentials(tls_ca, tls_key, tls_cert)
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


def model_ref(model: str | None, version: str | None) -> vae_pb2.ModelRef:
    """The ModelRef of a call; empty strings mean "the default model" and "its latest version" on the server."""
    return vae_pb2.ModelRef(name=model or "", version=version or "")


class Connection:
    """One channel to a vae-serve server, its health, and its model info (cached): VaeClient's base,
    which adds the rpcs (client/client.py)."""

    def __init__(
        self,
        target: str,
        timeout_s: float,
        retry: RetryPolicy | None,
        tls: bool = False,
        tls_ca: bytes | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
        token: str | None = None,
    ) -> None:
        """Open a channel to ``target`` ("host:port"); VaeClient documents the arguments."""
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry
        # GetModelInfo by (model, version) as asked: the limits and score facts that split row-wise calls.
        self._info_cache: dict[tuple[str, str], vae_pb2.ModelInfo] = {}
        self._channel = open_channel(target, retry, tls, tls_ca, tls_cert, tls_key, token)
        self._stub = vae_pb2_grpc.VaeServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        """Close the channel; the client is unusable afterwards."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status of ``service`` ("" is the whole server), e.g. "SERVING"."""
        with translate_rpc_errors():
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout_s: float = 60.0, service: str = "") -> None:
        """Block until the server reports SERVING for ``service`` (it binds its port before loading
        models): a health Watch, waiting for the connection too.

        Raises:
            VaeClientError: DEADLINE_EXCEEDED if it is not serving within ``timeout_s``.
        """
        request = health_pb2.HealthCheckRequest(service=service)
        with translate_rpc_errors():
            updates = self._health.Watch(request, timeout=timeout_s, wait_for_ready=True)
            try:
                for update in updates:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            finally:
                updates.cancel()

    def info(self, model: str | None = None, version: str | None = None) -> vae_pb2.ModelInfo:
        """What the model is, how good it is, its scores, and the server's limits (asked afresh)."""
        request = vae_pb2.GetModelInfoRequest(model=model_ref(model, version))
        with translate_rpc_errors():
            info = self._stub.GetModelInfo(request, timeout=self.timeout_s)
        self._info_cache[(model or "", version or "")] = info
        return info

    def _cached_info(self, model: str | None, version: str | None) -> vae_pb2.ModelInfo:
        """GetModelInfo of (model, version), asked once per client: limits and score facts are the
        server's settings and registry, which do not change while it runs."""
        cached = self._info_cache.get((model or "", version or ""))
        return cached if cached is not None else self.info(model, version)
