"""TLS, mutual TLS, certificate reload and bearer-token authentication, against real servers, with
certificates made by openssl for each test session; and the transport limits the server sets.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_process import start_server, tensor
from tests.test_server_lifecycle import samples, scrape
from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.client import VaeClient, VaeClientError
from vae_serve.service.server import server_options
from vae_serve.service.settings import Settings

VAE_CLIENT = str(Path(sys.executable).with_name("vae-client"))
TOKENS = ("alpha-7f3c9e", "beta-11d2aa")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def authority(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)  # fmt: skip


def signed(folder: Path, ca: str, name: str, server: bool) -> None:
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", extensions.name, "-out", f"{name}.pem", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """Two CAs; a server certificate from each; a client certificate from the first and a rogue one."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        authority(folder, ca)
    signed(folder, "ca", "server", server=True)
    signed(folder, "other-ca", "server2", server=True)
    signed(folder, "ca", "client", server=False)
    signed(folder, "other-ca", "rogue", server=False)
    return folder


def read(pki: Path, name: str) -> bytes:
    return (pki / name).read_bytes()


def elbo_ok(client: VaeClient) -> bool:
    return len(client.elbo(np.full((2, 64), 0.5, np.float32), k=2, seed=1).elbo) == 2


def test_tls_serves_only_tls(digits_bundle, pki):
    server = start_server(
        "--bundle", str(digits_bundle), "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        credentials=grpc.ssl_channel_credentials(read(pki, "ca.pem")),
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{server.port}"
        with VaeClient(address, tls_ca=read(pki, "ca.pem")) as client:
            assert elbo_ok(client)
        for wrong in (
            VaeClient(address, timeout_s=3),
            VaeClient(address, timeout_s=3, tls_ca=read(pki, "other-ca.pem")),
        ):
            with wrong, pytest.raises(VaeClientError) as caught:
                wrong.health()
            assert caught.value.code_name == "UNAVAILABLE"
        cli = subprocess.run(
            [VAE_CLIENT, "--target", address, "--tls-ca", str(pki / "ca.pem"), "health"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0 and cli.stdout.strip().endswith("SERVING"), cli.stderr
        assert "transport: TLS" in server.log()
    finally:
        assert server.stop() == 0


def test_mutual_tls_requires_a_client_certificate_from_the_ca(digits_bundle, pki):
    server = start_server(
        "--bundle", str(digits_bundle), "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"),
        credentials=grpc.ssl_channel_credentials(read(pki, "ca.pem"), read(pki, "client.key"), read(pki, "client.pem")),
    )  # fmt: skip
    try:
        address, ca = f"127.0.0.1:{server.port}", read(pki, "ca.pem")
        with VaeClient(address, tls_ca=ca, tls_cert=read(pki, "client.pem"), tls_key=read(pki, "client.key")) as client:
            assert elbo_ok(client)
        for cert, key in ((None, None), (read(pki, "rogue.pem"), read(pki, "rogue.key"))):
            with VaeClient(address, timeout_s=3, tls_ca=ca, tls_cert=cert, tls_key=key) as client:
                with pytest.raises(VaeClientError) as caught:
                    client.health()
                assert caught.value.code_name == "UNAVAILABLE"
    finally:
        assert server.stop() == 0


def test_a_renewed_certificate_is_used_without_a_restart(digits_bundle, pki, tmp_path):
    shutil.copy(pki / "server.pem", tmp_path / "tls.pem")
    shutil.copy(pki / "server.key", tmp_path / "tls.key")
    server = start_server(
        "--bundle", str(digits_bundle), "--tls-cert", str(tmp_path / "tls.pem"), "--tls-key", str(tmp_path / "tls.key"),
        credentials=grpc.ssl_channel_credentials(read(pki, "ca.pem")),
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{server.port}"
        # The renewal: a certificate from the other CA, written over the files the server was given.
        (tmp_path / "tls.key").write_bytes(read(pki, "server2.key"))
        (tmp_path / "tls.pem").write_bytes(read(pki, "server2.pem"))
        with VaeClient(address, tls_ca=read(pki, "other-ca.pem")) as client:
            assert elbo_ok(client)
        with VaeClient(address, timeout_s=3, tls_ca=read(pki, "ca.pem")) as client, pytest.raises(VaeClientError):
            client.health()
        assert "TLS certificate reloaded" in server.log()
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def token_server(digits_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "tokens").write_text(f"# accepted bearer tokens\n{TOKENS[0]}\n")
    server = start_server(
        "--bundle", str(digits_bundle), "--auth-tokens-file", str(folder / "tokens"), env={"VAE_AUTH_TOKENS": TOKENS[1]}
    )  # fmt: skip
    yield server
    assert server.stop() == 0


@pytest.mark.parametrize(
    "metadata, reason, message",
    [
        ((), "missing", "missing credentials"),
        ((("authorization", "Bearer nope"),), "wrong", "invalid token"),
        ((("authorization", f"Bearer {TOKENS[0]}x"),), "wrong", "invalid token"),
        ((("authorization", TOKENS[0]),), "malformed", "expected 'Bearer <token>'"),
    ],
)
def test_calls_without_an_accepted_token_are_unauthenticated(token_server, metadata, reason, message):
    before = samples(scrape(token_server.metrics_url))
    stub = vae_pb2_grpc.VaeServiceStub(token_server.channel)
    calls = [
        lambda: stub.Elbo(vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5))), metadata=metadata, timeout=10),
        lambda: list(stub.SampleStream(vae_pb2.SampleRequest(n=3), metadata=metadata, timeout=10)),
        lambda: oip_pb2_grpc.GRPCInferenceServiceStub(token_server.channel).ServerMetadata(
            oip_pb2.ServerMetadataRequest(), metadata=metadata, timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED and message in caught.value.details()
    after = samples(scrape(token_server.metrics_url))
    key = ("vae_auth_failures_total", (("method", "Elbo"), ("reason", reason)))
    assert after[key] - before.get(key, 0.0) == 1


def test_accepted_tokens_from_file_and_env_and_open_health(token_server):
    stub = vae_pb2_grpc.VaeServiceStub(token_server.channel)
    for token in TOKENS:
        reply = stub.Elbo(
            vae_pb2.ElboRequest(x=tensor(np.full((1, 64), 0.5)), seed=1),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert len(reply.elbo) == 1
    health = health_pb2_grpc.HealthStub(token_server.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    cli = subprocess.run(
        [VAE_CLIENT, "--target", f"127.0.0.1:{token_server.port}", "info"],
        capture_output=True, text=True, timeout=60, env={"VAE_TOKEN": TOKENS[1], "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    denied = subprocess.run(
        [VAE_CLIENT, "--target", f"127.0.0.1:{token_server.port}", "--token", "nope", "info"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    log = token_server.log()
    assert "bearer tokens (2 accepted)" in log and not any(token in log for token in TOKENS)


def test_transport_limits_are_explicit():
    settings = Settings(bundle="unused")
    options = dict(server_options(settings))
    assert options["grpc.max_receive_message_length"] == 16 * 1024 * 1024
    assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] == 60_000 and options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.max_connection_age_ms"] == 300_000 and options["grpc.max_connection_age_grace_ms"] == 30_000
    assert options["grpc.max_connection_idle_ms"] == 600_000
    assert settings.max_concurrent_rpcs == 1000 and settings.max_queue_rows == 1_048_576
    tuned = dict(server_options(Settings(bundle="unused", max_connection_age_s=None, keepalive_time_s=5)))
    assert "grpc.max_connection_age_ms" not in tuned and tuned["grpc.keepalive_time_ms"] == 5000


def test_half_a_tls_pair_is_refused_at_start(pki):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("vae-serve")), "--bundle", "x", "--tls-cert", str(pki / "server.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "set both --tls-cert and --tls-key" in result.stderr
