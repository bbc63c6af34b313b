"""Tables (markdown) and plots (PNG) from run_all's JSON lines, with the issue's target ratios.

python bench/report.py bench/results/run.jsonl --plots docs/img
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

TARGET_ORDER = [
    "echo",
    "vae-serve-baseline",
    "vae-serve",
    "vae-serve-unbatched",
    "triton",
    "mlserver",
    "in-process-baseline",
    "in-process",
]
# vae-serve and the in-process reference that does its work; the baseline (an earlier checkout,
# run_all --baseline) against its own.
SERVERS = {"vae-serve": "in-process", "vae-serve-baseline": "in-process-baseline"}


def load(path: Path) -> tuple[dict, list[dict]]:
    """The first run header, and the latest result of each point (a rerun replaces its target's points)."""
    headers, latest = [], {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "header" in record:
            headers.append(record["header"])
            continue
        level = record.get("concurrency", record.get("rate_per_s"))
        latest[(record["target"], record["workload"], record["mode"], level)] = record
    return (headers[0] if headers else {}), list(latest.values())


def point(rows: list[dict], target: str, workload: str, concurrency: int | None = None) -> dict | None:
    for row in rows:
        same = row["target"] == target and row["workload"] == workload and row["mode"] == "closed"
        if same and (concurrency is None or row["concurrency"] == concurrency):
            return row
    return None


def tables(rows: list[dict]) -> str:
    out = []
    by_workload = defaultdict(list)
    for row in rows:
        by_workload[row["workload"]].append(row)
    for workload, items in by_workload.items():
        out.append(f"\n### {workload}\n")
        columns = ["target", "mode", "concurrency / rate", "requests/s", "rows/s", "p50 ms", "p90 ms", "p99 ms"]
        out.append("| " + " | ".join([*columns, "p99.9 ms", "errors"]) + " |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        items.sort(
            key=lambda row: (
                TARGET_ORDER.index(row["target"]) if row["target"] in TARGET_ORDER else 99,
                row["mode"],
                row.get("concurrency", row.get("rate_per_s", 0)),
            )
        )
        for row in items:
            level = row.get("concurrency") if row["mode"] == "closed" else f"{row['rate_per_s']:g}/s"
            cells = [f"{row.get(key, float('nan')):.2f}" for key in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms")]
            out.append(
                f"| {row['target']} | {row['mode']} | {level} | {row['requests_per_s']:.0f} | "
                f"{row['rows_per_s']:.0f} | {' | '.join(cells)} | {row['errors']} |"
            )
    return "\n".join(out)


def ratio(numerator: dict | None, denominator: dict | None, key: str = "requests_per_s") -> str:
    if not numerator or not denominator or not denominator[key]:
        return "n/a"
    return f"{numerator[key] / denominator[key]:.2f}x"


def targets(rows: list[dict]) -> str:
    """Issue 13's targets, for vae-serve and (when measured) the baseline checkout, and the peers."""
    lines = ["| target | required | " + " | ".join(SERVERS) + " |", "|---|---|---|---|"]

    def row(label: str, required: str, measure) -> None:
        lines.append(f"| {label} | {required} | " + " | ".join(measure(s, r) for s, r in SERVERS.items()) + " |")

    def rows_ratio(workload: str, concurrency: int):
        def measure(server: str, reference: str) -> str:
            served, alone = point(rows, server, workload, concurrency), point(rows, reference, workload)
            if not served or not alone:
                return "n/a"
            thousands = f"{served['rows_per_s'] / 1e3:.0f}k / {alone['rows_per_s'] / 1e3:.0f}k"
            return f"{ratio(served, alone, 'rows_per_s')} ({thousands})"

        return measure

    def latency_over_echo(server: str, reference: str) -> str:
        served, echo = point(rows, server, "elbo_b1_k1", 1), point(rows, "echo", "elbo_b1_k1", 1)
        if not served or not echo or "mean_ms" not in served:
            return "n/a"
        return f"+{served['mean_ms'] - echo['mean_ms']:.3f} ms ({served['mean_ms']:.3f} vs {echo['mean_ms']:.3f})"

    def versus(other: str, workload: str, concurrency: int):
        def measure(server: str, reference: str) -> str:
            return ratio(point(rows, server, workload, concurrency), point(rows, other, workload, concurrency))

        return measure

    row("Elbo b256 k1 c4, rows/s vs in-process", ">= 0.8x", rows_ratio("elbo_b256", 4))
    row("Elbo b256 k1 c1, rows/s vs in-process", ">= 0.6x", rows_ratio("elbo_b256", 1))
    row("Elbo b1 c1, mean latency vs echo", "<= +0.25 ms", latency_over_echo)
    row("Elbo b1 c16, calls/s vs echo", ">= 0.7x", versus("echo", "elbo_b1_k1", 16))
    row("ScoreAnomaly b256 c4, rows/s vs in-process", ">= 0.8x", rows_ratio("score_b256", 4))
    row("Elbo b1 c16 vs Triton (PyTriton)", "(issue 4: 4x)", versus("triton", "elbo_b1_k1", 16))
    row("Elbo b1 c16 vs MLServer", "(issue 4: 5x)", versus("mlserver", "elbo_b1_k1", 16))
    row("Elbo b256 c4 vs Triton (PyTriton)", "-", versus("triton", "elbo_b256", 4))
    return "\n".join(lines)


def plots(rows: list[dict], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    workloads = sorted({row["workload"] for row in rows})
    figure, axes = plt.subplots(1, len(workloads), figsize=(4 * len(workloads), 3.6))
    for axis, workload in zip(axes, workloads, strict=True):
        for target in TARGET_ORDER:
            points = sorted(
                (row["concurrency"], row["rows_per_s"])
                for row in rows
                if row["target"] == target
                and row["workload"] == workload
                and row["mode"] == "closed"
                and not target.startswith("in-process")
            )
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=target)
        inprocess = point(rows, "in-process", workload)
        if inprocess:
            axis.axhline(inprocess["rows_per_s"], color="grey", linestyle="--", label="in-process ORT")
        axis.set(title=workload, xlabel="concurrency", ylabel="rows/s", xscale="log", yscale="log")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    written.append(directory / "throughput.png")
    figure.savefig(written[-1], dpi=110)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, concurrency in zip(axes, (1, 16), strict=True):
        names, values = [], []
        for target in TARGET_ORDER:
            row = point(rows, target, "elbo_b1_k1", concurrency)
            if row:
                names.append(target)
                values.append([row.get(key, float("nan")) for key in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms")])
        for index, label in enumerate(("p50", "p90", "p99", "p99.9")):
            axis.bar(
                [i + index * 0.2 for i in range(len(names))], [value[index] for value in values], width=0.2, label=label
            )
        axis.set_xticks([i + 0.3 for i in range(len(names))], names, rotation=20, fontsize=7)
        axis.set(title=f"Elbo batch 1, concurrency {concurrency}", ylabel="latency ms", yscale="log")
        axis.legend(fontsize=7)
    figure.tight_layout()
    written.append(directory / "latency_elbo_b1.png")
    figure.savefig(written[-1], dpi=110)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--plots", type=Path, help="directory for the PNG plots")
    args = parser.parse_args()
    header, rows = load(args.results)
    print(
        f"Run {header.get('run')}: bundle {header.get('bundle')}, server CPUs {header.get('server_cpus')}, "
        f"client CPUs {header.get('client_cpus')}, load average before {header.get('load_average_before')}\n"
    )
    print(targets(rows))
    print(tables(rows))
    if args.plots:
        for path in plots(rows, args.plots):
            print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
