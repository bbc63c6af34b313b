"""TLS (optionally mutual) for the gRPC port, and bearer-token authentication of model calls.

TLS uses grpcio's dynamic server credentials: at each new handshake gRPC asks for the current
certificate configuration, and this module re-reads the PEM files only when one of them changed on
disk, so a renewed certificate (cert-manager, a rotated Secret) takes effect without a restart.

Tokens come from a file (one per line, ``#`` comments) and/or ``VAE_AUTH_TOKENS`` (comma-separated).
Every call to a model service must carry ``authorization: Bearer <token>``; a missing or wrong one
is answered UNAUTHENTICATED. Tokens are compared in constant time against every accepted token (no
early exit) and never logged. Health and reflection stay open: probes carry no secrets.
"""

import hmac
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)
BEARER = "bearer "


class SecurityError(RuntimeError):
    """TLS material or the token file cannot be used; the message says which file and why."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SecurityError(f"cannot read the {what} {path}: {error.strerror}") from None


class _CertificateFiles:
    """The PEM files of the server's TLS identity, re-read when their modification times change."""

    def __init__(self, settings: Settings) -> None:
        self.paths = {"cert": settings.tls_cert, "key": settings.tls_key, "client_ca": settings.tls_client_ca}
        self.stamps: tuple | None = None

    def current_stamps(self) -> tuple:
        return tuple(path.stat().st_mtime_ns if path else None for path in self.paths.values())

    def read(self) -> dict[str, bytes]:
        pem = {name: _read(path, f"TLS {name.replace('_', ' ')} file") for name, path in self.paths.items() if path}
        self.stamps = self.current_stamps()
        return pem

    def configuration(self, pem: dict[str, bytes] | None = None) -> grpc.ServerCertificateConfiguration:
        pem = self.read() if pem is None else pem
        return grpc.ssl_server_certificate_configuration([(pem["key"], pem["cert"])], pem.get("client_ca"))

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration if the files changed, else None."""
        try:
            if self.current_stamps() == self.stamps:
                return None
            configuration = self.configuration()
        except (OSError, SecurityError) as error:  # keep serving with the old certificate
            log.error("TLS files changed but cannot be reloaded, keeping the current ones: %s", error)
            return None
        log.info("TLS certificate reloaded from %s", self.paths["cert"])
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext."""
    if settings.tls_cert is None:
        return None
    files = _CertificateFiles(settings)
    pem = files.read()  # once: the initial configuration and the start-up check use the same bytes
    initial = files.configuration(pem)
    # Validate now: a bad key or certificate must stop the start, not fail every handshake later.
    grpc.ssl_server_credentials(
        [(pem["key"], pem["cert"])],
        root_certificates=pem.get("client_ca"),
        require_client_auth=settings.tls_client_ca is not None,
    )
    return grpc.dynamic_ssl_server_credentials(
        initial, files.changed, require_client_authentication=settings.tls_client_ca is not None
    )


def load_tokens(settings: Settings) -> list[bytes]:
    """Every accepted token; empty means authentication is off."""
    tokens = []
    if settings.auth_tokens_file is not None:
        for line in _read(settings.auth_tokens_file, "token file").decode().splitlines():
            if (token := line.strip()) and not token.startswith("#"):
                tokens.append(token)
    if settings.auth_tokens is not None:
        tokens += [token.strip() for token in settings.auth_tokens.get_secret_value().split(",") if token.strip()]
    if (settings.auth_tokens_file is not None or settings.auth_tokens is not None) and not tokens:
        raise SecurityError("authentication is configured but no token was found (empty token file or VAE_AUTH_TOKENS)")
    return [token.encode() for token in tokens]


def _token_matches(presented: bytes, tokens: list[bytes]) -> bool:
    matched = False
    for token in tokens:  # no early exit: the time taken does not say which token came close
        matched |= hmac.compare_digest(presented, token)
    return matched


@dataclass(frozen=True)
class Refusal:
    reason: str  # the auth-failures metric's label: missing, malformed or wrong
    message: str  # what the client is told


REFUSALS = {
    "missing": "missing credentials: send 'authorization: Bearer <token>'",
    "malformed": "malformed authorization: expected 'Bearer <token>'",
    "wrong": "invalid token",
}


def bearer_refusal(header: str | bytes | None, tokens: list[bytes]) -> Refusal | None:
    """Why an ``authorization`` value (gRPC metadata or HTTP header) is refused; None if accepted."""
    if header is None:
        return Refusal("missing", REFUSALS["missing"])
    if isinstance(header, bytes):
        header = header.decode(errors="replace")
    if not header.lower().startswith(BEARER):
        return Refusal("malformed", REFUSALS["malformed"])
    try:
        presented = header[len(BEARER) :].strip().encode()
    except UnicodeEncodeError:  # an HTTP header's undecodable bytes
        return Refusal("malformed", REFUSALS["malformed"])
    if not _token_matches(presented, tokens):
        return Refusal("wrong", REFUSALS["wrong"])
    return None


def _deny(message: str):
    async def deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return deny


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for calls to ``protected`` services without an accepted bearer token."""

    def __init__(self, tokens: list[bytes], protected: tuple[str, ...], metrics: ServerMetrics) -> None:
        self.tokens = tokens
        self.protected = protected
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        if not handler_call_details.method.startswith(self.protected):
            return await continuation(handler_call_details)
        values = [value for key, value in handler_call_details.invocation_metadata or () if key == "authorization"]
        if len(values) > 1:  # which one would count is a guess: refused, as on the REST port
            refusal = Refusal("malformed", REFUSALS["malformed"] + ", once")
        else:
            refusal = bearer_refusal(values[0] if values else None, self.tokens)
        if refusal is None:
            return await continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        self.metrics.auth_failures.labels(method, refusal.reason).inc()
        return grpc.unary_unary_rpc_method_handler(_deny(refusal.message))


class HttpTls:
    """TLS of the REST port, from the gRPC port's files, re-read when they change.

    ``ssl`` calls the context's ``sni_callback`` at every handshake, with ``server_name`` None when
    the client sent no name (clients of an IP address), so it serves as gRPC's per-handshake hook:
    when a file's modification time changed, a *fresh* context is built from all the files and the
    handshake, and every later one, switches to it. A build that fails (a new certificate beside the
    old key, mid-rotation) leaves the working context in place and is tried again at the next
    handshake; loading into the live context instead could leave it with a certificate and no key.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files = _CertificateFiles(settings)
        self.files.stamps = self.files.current_stamps()
        self.failed_stamps: tuple | None = None
        self.context = self._build()  # raises at start: bad files stop the server, as for gRPC

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        if self.settings.tls_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.settings.tls_client_ca)
        context.sni_callback = self._on_handshake
        return context

    def _on_handshake(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        stamps = None
        try:
            stamps = self.files.current_stamps()
            if stamps != self.files.stamps:
                self.context = self._build()
                self.files.stamps = stamps
                log.info("TLS certificate of the REST port reloaded from %s", self.settings.tls_cert)
        except (OSError, ssl.SSLError) as error:  # keep serving with the current files
            if stamps != self.failed_stamps:  # once per change on disk, not once per handshake
                self.failed_stamps = stamps
                log.error("TLS files changed, cannot be loaded for the REST port; keeping the current ones: %s", error)
        if context is not self.context:
            ssl_object.context = self.context


def http_tls(settings: Settings) -> HttpTls | None:
    """TLS for the REST port, or None for plaintext."""
    return None if settings.tls_cert is None else HttpTls(settings)
