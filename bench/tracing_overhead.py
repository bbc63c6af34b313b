"""What tracing costs the server per call: off (no OTEL_* variables); on, exporting every span over
OTLP to a local sink that accepts and counts them; and on with 10 % of traces sampled.

One vae-serve at a time, pinned to core 0; bench/loadgen.py pinned to core 1; the sink runs in this
process (also core 1). Server CPU per call (user + system time over the window / calls answered),
the lowest of the rounds, as in bench/http_overhead.py. Prints a Markdown table; appends JSON lines
to --out.

    python bench/tracing_overhead.py --bundle models/digits --out bench/results/2026-11-29.jsonl
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.cpu_per_call import lowest_cpu_per_call  # noqa: E402
from bench.run_all import PYTHON, pinned  # noqa: E402

POINTS = [("elbo_b1_k1", 1), ("elbo_b1_k1", 16), ("elbo_b256", 4)]


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps nothing but the count of spans."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request, context):
        self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def run_sink() -> None:
    """The sink's own process (gRPC threads in this one would make the fork of the load generator
    unsafe): prints its port, then, on SIGTERM, the spans it received."""
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop(0)
    print(sink.spans, flush=True)


def start_sink() -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([PYTHON, __file__, "--sink"], stdout=subprocess.PIPE, text=True, preexec_fn=pinned({1}))
    return process, int(process.stdout.readline())


def start_server(bundle: Path, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    command = [str(Path(PYTHON).with_name("vae-serve")), "--bundle", str(bundle), "--port", "0", "--no-metrics"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env={**os.environ, **env},
        preexec_fn=pinned({0}),
    )  # fmt: skip
    while not (line := process.stdout.readline()).startswith("vae-serve listening on "):
        if not line:
            raise RuntimeError(f"vae-serve exited: {log.read_text()}")
    time.sleep(1.0)  # models load after the port is announced
    return process, int(line.rsplit(":", 1)[1])


def measure(bundle: Path, env: dict, label: str, duration_s: float, rounds: int) -> list[dict]:
    process, port = start_server(bundle, env, Path(f"/tmp/tracing_overhead_{label}.log"))
    rows = []
    try:
        for workload, concurrency in POINTS:
            best = lowest_cpu_per_call(process.pid, port, "vae", workload, concurrency, duration_s, rounds)
            rows.append(best | {"bench": "tracing_overhead", "tracing": label, "date": time.strftime("%Y-%m-%d %H:%M")})
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return run_sink()
    if args.bundle is None:
        parser.error("--bundle is required")
    sink, sink_port = start_sink()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    try:
        rows = measure(args.bundle, {}, "off", args.duration, args.rounds)
        rows += measure(args.bundle, otlp, "otlp", args.duration, args.rounds)
        sampled = {**otlp, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        rows += measure(args.bundle, sampled, "otlp 10%", args.duration, args.rounds)
    finally:
        sink.terminate()
        spans = int(sink.stdout.read().split()[-1])
    if args.out:
        with args.out.open("a") as stream:
            stream.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"spans received by the sink: {spans:,}")
    print("| workload | tracing | calls/s | mean ms | server CPU us/call | CPU vs off |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        point = (row["workload"], row["concurrency"])
        off = next(r for r in rows if r["tracing"] == "off" and (r["workload"], r["concurrency"]) == point)
        print(
            f"| {row['workload']} c{row['concurrency']} | {row['tracing']} | {row['requests_per_s']:,.0f} | "
            f"{row['mean_ms']:.3f} | {row['server_cpu_us_per_call']:,.0f} | "
            f"{row['server_cpu_us_per_call'] / off['server_cpu_us_per_call']:.2f}x |"
        )


if __name__ == "__main__":
    main()
