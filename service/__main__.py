"""``vae-serve``: parse settings, run the server, exit with its code. Nothing else lives here."""

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from vae_serve.core.errors import BundleError
from vae_serve.core.runtime import DeviceUnavailable
from vae_serve.service.settings import Settings

# Flag -> Settings field. Every flag defaults to None ("not given"), so VAE_* variables and the
# class defaults apply unless the flag is on the command line.
FLAGS = {
    "--bundle": ("bundle", Path, "one bundle directory to serve"),
    "--model-repository": ("model_repository", Path, "directory of <name>/<version>/ bundles"),
    "--host": ("host", str, "address to bind (default 127.0.0.1)"),
    "--port": ("port", int, "gRPC port; 0 picks a free one and prints it (default 50051)"),
    "--metrics-port": ("metrics_port", int, "Prometheus port; 0 picks a free one (default 9090)"),
    "--metrics-host": ("metrics_host", str, "address of the metrics endpoint (default: --host)"),
    "--processes": ("processes", int, "server processes sharing the port via SO_REUSEPORT (default 1)"),
    "--device": ("device", str, "cpu, cuda or auto (default cpu)"),
    "--intra-op-threads": ("intra_op_threads", int, "ONNX Runtime threads per run (default 1)"),
    "--worker-threads": ("worker_threads", int, "inference threads (default 4)"),
    "--grace": ("grace_s", float, "seconds in-flight calls get on SIGTERM (default 10)"),
    "--max-batch-rows": ("max_batch_rows", int, "rows x samples per batch; 1 turns batching off (default 8192)"),
    "--max-batch-wait": ("max_batch_wait_s", float, "longest a batch may wait to fill, seconds (default 0.002)"),
    "--batch-wait": ("batch_wait", str, "adaptive (wait only for expected callers) or fixed (default adaptive)"),
    "--batch-runners": ("batch_runners", int, "batches of one kind running at once (default 1)"),
    "--max-queue-rows": (
        "max_queue_rows",
        int,
        "rows x samples waiting per kind before RESOURCE_EXHAUSTED (default 1048576)",
    ),
    "--repository-poll": (
        "repository_poll_s",
        float,
        "seconds between model-repository scans for new versions, verified and swapped in live (default 10)",
    ),
    "--tls-cert": ("tls_cert", str, "PEM certificate chain: serve TLS only (reloaded when the file changes)"),
    "--tls-key": ("tls_key", str, "PEM private key of --tls-cert"),
    "--tls-client-ca": ("tls_client_ca", str, "PEM CA bundle: require client certificates it signed (mutual TLS)"),
    "--auth-tokens-file": (
        "auth_tokens_file",
        str,
        "file of bearer tokens, one per line: model calls then need 'authorization: Bearer <token>' "
        "(VAE_AUTH_TOKENS: comma-separated tokens, env only)",
    ),
    "--max-concurrent-rpcs": ("max_concurrent_rpcs", int, "calls handled at once (default 1000)"),
    "--keepalive-time": ("keepalive_time_s", float, "seconds of idle before the server pings (default 60)"),
    "--max-connection-age": ("max_connection_age_s", float, "seconds before a connection is recycled (default 300)"),
    "--max-rows": ("max_rows", int, "rows per request (default 1024)"),
    "--max-k": ("max_k", int, "samples per row (default 1000)"),
    "--max-row-samples": ("max_row_samples", int, "rows x samples per request (default 262144)"),
    "--max-sample-n": ("max_sample_n", int, "n of a unary Sample (default 4096)"),
    "--max-stream-sample-n": ("max_stream_sample_n", int, "n of a SampleStream (default 1000000)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-serve",
        description="Serve VAE model bundles over gRPC. Every setting can also come from VAE_<NAME>, e.g. VAE_PORT.",
    )
    for flag, (_, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    parser.add_argument(
        "--reflection", action=argparse.BooleanOptionalAction, default=None, help="gRPC reflection (default on)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--reuse-port", action="store_true", default=None, help=argparse.SUPPRESS)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {field: getattr(args, field_dest(flag)) for flag, (field, _, _) in FLAGS.items()}
    overrides = {field: value for field, value in overrides.items() if value is not None}
    if args.reflection is not None:
        overrides["reflection"] = args.reflection
    if args.no_metrics:
        overrides["metrics_port"] = None
    if args.reuse_port:
        overrides["reuse_port"] = True
    return Settings(**overrides)


def field_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        print(f"vae-serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    if settings.processes > 1:
        from vae_serve.service.processes import run_processes

        return run_processes(settings, sys.argv[1:] if argv is None else argv)
    from vae_serve.service.security import SecurityError
    from vae_serve.service.server import StartupError, serve  # imported once settings are valid: grpc is not free

    try:
        return asyncio.run(serve(settings))
    except (BundleError, DeviceUnavailable, SecurityError, StartupError) as error:
        print(f"vae-serve: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
