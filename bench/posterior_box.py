"""What the posterior box (issue 20) costs the bounds graph: the bundle's bounds.onnx against the same
graph with its three box Clips (the encoder's input, z_mean, z_logvar) turned into Identity, on one
thread, in-process, the same inputs and noise. Rounds alternate between the two graphs; each case
reports the best round's time per run of each, and their ratio.

    python bench/posterior_box.py --bundle models/digits
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_serve.core.manifest import MANIFEST_FILE
from vae_serve.core.runtime import BOUNDS_OUTPUTS, make_session
from vae_serve.export.bundle.fused_graph import BOUNDS_FILE, BOXED_LOGVAR, BOXED_MEAN, ENCODER_PREFIX

CASES = [(1, 1), (16, 1), (1, 100), (256, 1), (256, 10)]  # (rows, k)
BOX_OUTPUTS = {ENCODER_PREFIX + "x", BOXED_MEAN, BOXED_LOGVAR}


def unboxed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with each box Clip replaced by an Identity of its first input."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    bounds = set()
    for index, node in enumerate(copy.graph.node):
        if node.op_type == "Clip" and node.output[0] in BOX_OUTPUTS:
            bounds.update(node.input[1:])
            copy.graph.node[index].CopyFrom(helper.make_node("Identity", [node.input[0]], list(node.output)))
    kept = [tensor for tensor in copy.graph.initializer if tensor.name not in bounds]  # now unused
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return copy


def per_run_s(session, feeds: dict, runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        session.run(list(BOUNDS_OUTPUTS), feeds)
    return (time.perf_counter() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds-per-round", type=float, default=0.3)
    args = parser.parse_args()
    manifest = json.loads((args.bundle / MANIFEST_FILE).read_text())
    features, latent = manifest["input"]["num_features"], manifest["latent_dim"]
    model = onnx.load(args.bundle / BOUNDS_FILE)
    boxed = make_session(args.bundle / BOUNDS_FILE, intra_op_threads=1)
    reference_path = Path("/tmp") / f"unboxed-{args.bundle.name}.onnx"
    onnx.save(unboxed(model), reference_path)
    plain = make_session(reference_path, intra_op_threads=1)
    rng = np.random.default_rng(0)
    print(f"{'rows':>5} {'k':>4} {'boxed us':>10} {'unboxed us':>11} {'ratio':>6}")
    for rows, k in CASES:
        feeds = {
            "x": rng.random((rows, features), dtype=np.float32),
            "eps": rng.standard_normal((k, rows, latent), np.float32),
        }
        runs = max(1, int(args.seconds_per_round / per_run_s(boxed, feeds, 3)))
        best = {"boxed": float("inf"), "unboxed": float("inf")}
        for _ in range(args.rounds):
            best["boxed"] = min(best["boxed"], per_run_s(boxed, feeds, runs))
            best["unboxed"] = min(best["unboxed"], per_run_s(plain, feeds, runs))
        ratio = best["boxed"] / best["unboxed"]
        print(f"{rows:>5} {k:>4} {best['boxed'] * 1e6:>10.1f} {best['unboxed'] * 1e6:>11.1f} {ratio:>6.3f}")


if __name__ == "__main__":
    main()
