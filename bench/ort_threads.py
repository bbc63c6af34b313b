"""ONNX Runtime intra-op threads against throughput, in-process, for the Elbo workloads.

    python bench/ort_threads.py models/digits [more bundles...]

Prints rows/s and ms per call for intra_op_threads 1, 2 and 0 (ONNX Runtime's own choice).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workloads import WORKLOADS, inputs
from vae_serve.core import work
from vae_serve.core.bundle import load_bundle

SECONDS_PER_POINT = 1.5


def rate(vae, workload, x) -> float:
    item = [work.BoundsItem(x, workload.k, 1)]
    for _ in range(20):  # warm-up
        work.elbo_batch(vae, item)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS_PER_POINT:
        work.elbo_batch(vae, item)
        calls += 1
    return calls / (time.perf_counter() - started)


def main() -> None:
    for path in sys.argv[1:]:
        for threads in (1, 2, 0):
            bundle = load_bundle(path, intra_op_threads=threads)
            for name in ("elbo_b1_k1", "elbo_b1_k100", "elbo_b256"):
                workload = WORKLOADS[name]
                calls_per_s = rate(bundle.vae, workload, inputs(workload, bundle.manifest.input.num_features))
                print(
                    f"{bundle.manifest.name:14s} intra_op_threads={threads} {name:13s} "
                    f"{calls_per_s * workload.rows:10.0f} rows/s {1e3 / calls_per_s:8.3f} ms/call"
                )


if __name__ == "__main__":
    main()
