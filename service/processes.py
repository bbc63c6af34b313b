"""``--processes N``: N copies of the server on one port (SO_REUSEPORT), supervised.

One grpc.aio server drives one core at most (its event loop and the GIL); to use more cores the
server runs as several processes, and the kernel spreads incoming connections over them. Each is
a complete server (its own models, batcher, health and metrics), started with the same command
line plus the port, its metrics port and ``--reuse-port``. SIGTERM and SIGINT are forwarded;
if one process fails, the others are stopped and its exit code is returned.
"""

import signal
import socket
import subprocess
import sys
import time

from vae_serve.service.settings import Settings

POLL_S = 0.2


def reserve_port(host: str, port: int) -> int:
    """The port to share: the requested one, or a free one when it is 0."""
    if port:
        return port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def child_command(argv: list[str], port: int, metrics_port: int | None, http_port: int | None = None) -> list[str]:
    """The command line of one server process: this interpreter, the installed vae_serve.service.

    ``-P`` keeps the working directory off sys.path, so a folder that happens to hold a
    ``vae_serve`` or ``service`` package can never be what the child runs. Later flags win in
    argparse: the appended ones override whatever ``argv`` says.
    """
    extra = ["--processes", "1", "--reuse-port", "--port", str(port)]
    if metrics_port is not None:
        extra += ["--metrics-port", str(metrics_port)]
    if http_port is not None:
        extra += ["--http-port", str(http_port)]  # shared like the gRPC port
    return [sys.executable, "-P", "-m", "vae_serve.service", *argv, *extra]


def run_processes(settings: Settings, argv: list[str]) -> int:
    port = reserve_port(settings.host, settings.port)
    http_port = None if settings.http_port is None else reserve_port(settings.host, settings.http_port)
    children = []
    for index in range(settings.processes):
        metrics_port = None
        if settings.metrics_port is not None:
            metrics_port = settings.metrics_port + index if settings.metrics_port else 0
        children.append(subprocess.Popen(child_command(argv, port, metrics_port, http_port)))
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    while True:
        codes = [child.poll() for child in children]
        failed = [code for code in codes if code not in (None, 0)]
        if failed and not stopping:
            forward(signal.SIGTERM, None)  # one process down: take the rest down, report its code
        if all(code is not None for code in codes):
            return max(codes)
        time.sleep(POLL_S)
