"""Load generator: closed loop over a concurrency sweep, or open loop at fixed request rates.

    python bench/loadgen.py --target 127.0.0.1:50051 --protocol vae --workload elbo_b1_k1 \\
        --closed 1,4,16,64 --duration 8 --json out.json
    python bench/loadgen.py ... --open 500,1000,2000

Closed loop: C workers each send their next request when the last one returns. Open loop:
requests start on a fixed schedule whatever the replies do, and latency counts from the scheduled
start, so a slow server cannot hide its queueing (no coordinated omission). Reports requests/s,
rows/s, p50/p90/p99/p99.9 latency, errors and the 1-minute load average.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workloads import CALLERS, CHANNEL_OPTIONS, REST_PROTOCOLS, WORKLOADS, rest_caller

PERCENTILES = (50, 90, 99, 99.9)


def summary(latencies_s: list[float], rows: int, errors: int, elapsed_s: float) -> dict:
    latency_ms = np.asarray(latencies_s) * 1e3 if latencies_s else np.asarray([np.nan])
    return {
        "requests": len(latencies_s),
        "errors": errors,
        "requests_per_s": len(latencies_s) / elapsed_s,
        "rows_per_s": rows / elapsed_s,
        "mean_ms": float(np.mean(latency_ms)),
        **{f"p{p:g}_ms": float(np.percentile(latency_ms, p)) for p in PERCENTILES},
        "load_average_1m": os.getloadavg()[0],
    }


async def closed_loop(calls, concurrency: int, duration_s: float, warmup_s: float) -> dict:
    latencies, rows, errors = [], 0, 0
    measuring_from = time.perf_counter() + warmup_s
    stop_at = measuring_from + duration_s

    async def worker(call) -> None:
        nonlocal rows, errors
        while (started := time.perf_counter()) < stop_at:
            try:
                done = await call()
            except (grpc.aio.AioRpcError, aiohttp.ClientError):
                errors += started >= measuring_from
                continue
            if started >= measuring_from:
                latencies.append(time.perf_counter() - started)
                rows += done

    # Workers take the connections in turn, so a multi-process server (SO_REUSEPORT balances
    # connections, not calls) sees its share of the load.
    await asyncio.gather(*(worker(calls[index % len(calls)]) for index in range(concurrency)))
    return summary(latencies, rows, errors, duration_s)


async def open_loop(calls, rate_per_s: float, duration_s: float, warmup_s: float, max_outstanding: int = 4096) -> dict:
    latencies, rows, errors, dropped = [], 0, 0, 0
    outstanding: set[asyncio.Task] = set()
    begin = time.perf_counter()
    total = int((warmup_s + duration_s) * rate_per_s)

    async def one(call, scheduled: float, measured: bool) -> None:
        nonlocal rows, errors
        try:
            done = await call()
        except (grpc.aio.AioRpcError, aiohttp.ClientError):
            errors += measured
            return
        if measured:
            latencies.append(time.perf_counter() - scheduled)
            rows += done

    for index in range(total):
        scheduled = begin + index / rate_per_s
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if len(outstanding) >= max_outstanding:
            dropped += 1  # the server fell this far behind: counted, not silently queued
            continue
        task = asyncio.ensure_future(one(calls[index % len(calls)], scheduled, scheduled - begin >= warmup_s))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    await asyncio.gather(*outstanding)
    result = summary(latencies, rows, errors + dropped, duration_s)
    result["offered_per_s"] = rate_per_s
    return result


async def sweep(args: argparse.Namespace, calls) -> list[dict]:
    results = []
    for concurrency in args.closed:
        result = await closed_loop(calls, concurrency, args.duration, args.warmup)
        results.append({"mode": "closed", "concurrency": concurrency, "channels": args.channels, **result})
    for rate in args.open:
        result = await open_loop(calls, rate, args.duration, args.warmup)
        results.append({"mode": "open", "rate_per_s": rate, "channels": args.channels, **result})
    return results


async def run_rest(args: argparse.Namespace) -> list[dict]:
    """The REST binding: one HTTP/1.1 keep-alive connection per concurrent worker at most."""
    workload = WORKLOADS[args.workload]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        binary = args.protocol == "rest-binary"
        calls = [rest_caller(session, f"http://{args.target}", workload, args.num_features, binary)]
        results = await sweep(args, calls)
    return [{"target": args.label, "workload": workload.name, **result} for result in results]


async def run(args: argparse.Namespace) -> list[dict]:
    if args.protocol in REST_PROTOCOLS:
        return await run_rest(args)
    workload = WORKLOADS[args.workload]
    # A local subchannel pool per channel: without it, channels to one target share one connection.
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        calls = [CALLERS[args.protocol](channel, workload, args.num_features) for channel in channels]
        results = await sweep(args, calls)
    finally:
        for channel in channels:
            await channel.close()
    return [{"target": args.label, "workload": workload.name, **result} for result in results]


def numbers(text: str, kind=int) -> list:
    return [kind(item) for item in text.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--protocol", choices=sorted([*CALLERS, *REST_PROTOCOLS]), default="vae")
    parser.add_argument("--label", default=None, help="name of the target in the results")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--num-features", type=int, default=64)
    parser.add_argument("--closed", type=numbers, default=[], help="concurrency levels, e.g. 1,4,16,64")
    parser.add_argument("--open", type=lambda text: numbers(text, float), default=[], help="request rates per second")
    parser.add_argument("--channels", type=int, default=1, help="client connections the workers share")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--json", type=Path, help="append results as JSON lines here")
    args = parser.parse_args(argv)
    args.label = args.label or f"{args.protocol}@{args.target}"
    results = asyncio.run(run(args))
    for result in results:
        print(json.dumps(result), flush=True)
        if args.json:
            with args.json.open("a") as stream:
                stream.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
