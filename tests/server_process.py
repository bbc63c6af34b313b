"""Start a real ``vae-serve`` process on port 0 and talk to it with real gRPC stubs."""

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc

VAE_SERVE = str(Path(sys.executable).with_name("vae-serve"))
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    metrics_url: str | None
    log_path: Path
    credentials: grpc.ChannelCredentials | None = None  # TLS; None: plaintext
    http_url: str | None = None  # the REST binding's base URL, when started with --http-port
    # stdout: the lines read while starting, and the queue the reader thread fills with the rest.
    startup_lines: list[str] = field(default_factory=list)
    lines: "queue.Queue[str | None] | None" = None
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.channel = grpc.insecure_channel(address)
        else:
            self.channel = grpc.secure_channel(address, self.credentials)

    @property
    def stub(self) -> vae_pb2_grpc.VaeServiceStub:
        return vae_pb2_grpc.VaeServiceStub(self.channel)

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def log(self) -> str:
        return self.log_path.read_text()

    def stdout(self, wait_s: float = 5) -> str:
        """Everything the process printed on stdout; call after ``stop`` (waits up to ``wait_s`` per line)."""
        printed = list(self.startup_lines)
        while self.lines is not None:
            try:
                line = self.lines.get(timeout=wait_s)
            except queue.Empty:
                break
            if line is None:
                break
            printed.append(line)
        return "\n".join(printed)

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        self.channel.close()
        return code


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def launch(*args: str, env: dict | None = None, metrics: bool = True) -> tuple[subprocess.Popen, "queue.Queue", Path]:
    log_path = Path(tempfile.mkstemp(prefix="vae-serve-", suffix=".log")[1])
    command = [VAE_SERVE, "--host", "127.0.0.1", "--port", "0", *args]
    command += ["--metrics-port", "0"] if metrics else ["--no-metrics"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log_path.open("w"),
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    return process, lines, log_path


def start_server(
    *args: str,
    env: dict | None = None,
    metrics: bool = True,
    timeout_s: float = 60,
    credentials: grpc.ChannelCredentials | None = None,
) -> ServerProcess:
    """Start vae-serve, read the addresses it prints, wait until health says SERVING."""
    process, lines, log_path = launch(*args, env=env, metrics=metrics)
    port, metrics_url, http_url = None, None, None
    http = "--http-port" in args
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while port is None or (metrics and metrics_url is None) or (http and http_url is None):
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise RuntimeError(f"vae-serve exited with {process.wait()}: {log_path.read_text()}")
        seen.append(line)
        if line.startswith("vae-serve listening on "):
            port = int(line.rsplit(":", 1)[1])
        elif line.startswith("vae-serve metrics on "):
            metrics_url = line.split(" on ", 1)[1]
        elif line.startswith("vae-serve http on "):
            http_url = line.split(" on ", 1)[1]
    server = ServerProcess(process, port, metrics_url, log_path, credentials, http_url, seen, lines)
    while True:
        try:
            if server.health_status() == SERVING:
                return server
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            server.stop()
            raise RuntimeError(f"vae-serve did not become SERVING: {server.log()}")
        time.sleep(0.05)


def tensor(array) -> vae_pb2.Tensor:
    """A vae.v1.Tensor of ``array`` as float32 little-endian."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return vae_pb2.Tensor(shape=array.shape, data=array.tobytes())
