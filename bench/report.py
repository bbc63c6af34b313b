"""Tables (markdown) and plots (PNG) from run_all's JSON lines, with the issue's target ratios.

python bench/report.py bench/results/run.jsonl --plots docs/img
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

TARGET_ORDER = ["echo", "vae-serve", "vae-serve-unbatched", "triton", "mlserver", "in-process"]


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
    vae16 = point(rows, "vae-serve", "elbo_b1_k1", 16)
    inproc256 = point(rows, "in-process", "elbo_b256")
    b256 = [ratio(point(rows, "vae-serve", "elbo_b256", c), inproc256, "rows_per_s") for c in (1, 4)]
    vae1 = point(rows, "vae-serve", "elbo_b1_k1", 1)
    echo1 = point(rows, "echo", "elbo_b1_k1", 1)
    inproc1 = point(rows, "in-process", "elbo_b1_k1")
    p99_budget = (echo1["p99_ms"] + inproc1["p50_ms"]) if echo1 and inproc1 else None
    lines = [
        "| target | required | measured |",
        "|---|---|---|",
        f"| Elbo b1 c16 vs echo | >= 0.8x | {ratio(vae16, point(rows, 'echo', 'elbo_b1_k1', 16))} |",
        f"| Elbo b1 c16 vs Triton (PyTriton) | >= 4x | {ratio(vae16, point(rows, 'triton', 'elbo_b1_k1', 16))} |",
        f"| Elbo b1 c16 vs MLServer | >= 5x | {ratio(vae16, point(rows, 'mlserver', 'elbo_b1_k1', 16))} |",
        f"| Elbo b256 rows/s vs in-process ORT | >= 0.9x | {b256[0]} (c1), {b256[1]} (c4) |",
        "| Elbo b1 c1 p99 vs 2 x (echo p99 + in-process) | <= 1.0x | "
        + (
            f"{vae1['p99_ms'] / (2 * p99_budget):.2f}x ({vae1['p99_ms']:.2f} ms vs 2 x {p99_budget:.2f} ms) |"
            if vae1 and p99_budget
            else "n/a |"
        ),
    ]
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
                and target != "in-process"
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
