"""Experiment: the ELBO/IWAE computed inside one fused ONNX graph, against the served path (two
graphs and numpy), in-process on one thread. Bernoulli bundles only.

The fused graph is the bundle's encoder and decoder joined by the reparameterisation, with the
likelihood, the KL and the log-sum-exp as ONNX ops; its inputs are x [n, D] and the noise eps
[k, n, L], so the served reproducibility protocol (noise from each request's own seed) still holds.

    python bench/fused_graph.py --bundle models/digits
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_serve.core import work
from vae_serve.core.bundle import load_bundle
from vae_serve.core.runtime import make_session

CASES = [  # (requests per batch, rows per request, k)
    (1, 1, 1),
    (16, 1, 1),
    (1, 1, 100),
    (1, 256, 1),
]


def constant(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def fused_model(bundle_dir: Path) -> onnx.ModelProto:
    """encoder -> z = mean + exp(logvar/2) * eps -> decoder -> elbo, iwae per row."""
    encoder = compose.add_prefix(onnx.load(bundle_dir / "encoder.onnx"), "e_")
    decoder = compose.add_prefix(onnx.load(bundle_dir / "decoder.onnx"), "d_")
    log_2pi = math.log(2 * math.pi)
    latent = encoder.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    nodes = [
        helper.make_node("Identity", ["x"], ["e_x"]),
        *encoder.graph.node,
        constant("half", np.float32(0.5)),
        constant("neg_half", np.float32(-0.5)),
        constant("one", np.float32(1.0)),
        constant("log_2pi", np.float32(log_2pi)),
        constant("last_axis", np.array([-1], np.int64)),
        constant("sample_axis", np.array([0], np.int64)),
        constant("minus_one", np.array([-1], np.int64)),
        constant("two", np.array([2], np.int64)),
        constant("flat_shape", np.array([-1, latent], np.int64)),
        helper.make_node("Mul", ["e_z_logvar", "half"], ["half_logvar"]),
        helper.make_node("Exp", ["half_logvar"], ["std"]),
        helper.make_node("Mul", ["std", "eps"], ["scaled_eps"]),
        helper.make_node("Add", ["e_z_mean", "scaled_eps"], ["z"]),  # [k, n, L]
        helper.make_node("Shape", ["eps"], ["eps_shape"]),
        helper.make_node("Slice", ["eps_shape", "sample_axis", "two"], ["k_n"]),
        helper.make_node("Reshape", ["z", "flat_shape"], ["d_z"]),
        *decoder.graph.node,
        helper.make_node("Concat", ["k_n", "minus_one"], ["logits_shape"], axis=0),
        helper.make_node("Reshape", ["d_logits", "logits_shape"], ["logits"]),  # [k, n, D]
        helper.make_node("Mul", ["x", "logits"], ["x_logits"]),
        helper.make_node("Softplus", ["logits"], ["softplus"]),
        helper.make_node("Sub", ["x_logits", "softplus"], ["log_px_d"]),
        helper.make_node("ReduceSum", ["log_px_d", "last_axis"], ["log_px"], keepdims=0),  # [k, n]
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("Add", ["z2", "log_2pi"], ["pz_terms"]),
        helper.make_node("ReduceSum", ["pz_terms", "last_axis"], ["pz_sum"], keepdims=0),
        helper.make_node("Mul", ["pz_sum", "neg_half"], ["log_pz"]),
        helper.make_node("Mul", ["eps", "eps"], ["eps2"]),
        helper.make_node("Add", ["eps2", "e_z_logvar"], ["qz_a"]),
        helper.make_node("Add", ["qz_a", "log_2pi"], ["qz_terms"]),
        helper.make_node("ReduceSum", ["qz_terms", "last_axis"], ["qz_sum"], keepdims=0),
        helper.make_node("Mul", ["qz_sum", "neg_half"], ["log_qz"]),
        helper.make_node("Add", ["log_px", "log_pz"], ["w_a"]),
        helper.make_node("Sub", ["w_a", "log_qz"], ["log_w"]),
        helper.make_node("ReduceLogSumExp", ["log_w", "sample_axis"], ["lse"], keepdims=0),
        helper.make_node("Gather", ["eps_shape", "sample_axis"], ["k_int"]),
        helper.make_node("Cast", ["k_int"], ["k_float"], to=TensorProto.FLOAT),
        helper.make_node("Log", ["k_float"], ["log_k"]),
        helper.make_node("Sub", ["lse", "log_k"], ["iwae"]),
        helper.make_node("ReduceMean", ["log_px", "sample_axis"], ["reconstruction"], keepdims=0),
        helper.make_node("Exp", ["e_z_logvar"], ["var"]),
        helper.make_node("Mul", ["e_z_mean", "e_z_mean"], ["mean2"]),
        helper.make_node("Add", ["var", "mean2"], ["kl_a"]),
        helper.make_node("Sub", ["kl_a", "one"], ["kl_b"]),
        helper.make_node("Sub", ["kl_b", "e_z_logvar"], ["kl_terms"]),
        helper.make_node("ReduceSum", ["kl_terms", "last_axis"], ["kl_sum"], keepdims=0),
        helper.make_node("Mul", ["kl_sum", "half"], ["kl"]),
        helper.make_node("Sub", ["reconstruction", "kl"], ["elbo"]),
    ]
    features = encoder.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        nodes,
        "fused_bounds",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features]),
            helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["k", "n", latent]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]) for name in ("elbo", "iwae")],
        initializer=[*encoder.graph.initializer, *decoder.graph.initializer],
    )
    model = helper.make_model(graph, opset_imports=encoder.opset_import)
    model.ir_version = encoder.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def rate(function, duration_s: float) -> float:
    for _ in range(50):
        function()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration_s:
        function()
        calls += 1
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle, intra_op_threads=1)
    if bundle.manifest.likelihood.name != "bernoulli":
        raise SystemExit("the fused-graph experiment covers Bernoulli bundles only")
    model_path = Path("/tmp/fused_bounds.onnx")
    onnx.save(fused_model(args.bundle), model_path)
    fused = make_session(model_path, ["CPUExecutionProvider"], 1)
    features, latent = bundle.manifest.input.num_features, bundle.manifest.latent_dim
    rng = np.random.default_rng(0)
    for requests, rows, k in CASES:
        xs = [rng.random((rows, features), dtype=np.float32) for _ in range(requests)]
        items = [work.BoundsItem(x, k, seed) for seed, x in enumerate(xs)]

        def served(items=items):
            return work.elbo_batch(bundle.vae, items)

        def in_graph(xs=xs, k=k):
            # Each request's noise from its own generator, as served; one graph run for the batch.
            noise = [np.random.default_rng([seed, 0]).standard_normal((k, len(x), latent), np.float32)
                     for seed, x in enumerate(xs)]  # fmt: skip
            return fused.run(["elbo", "iwae"], {"x": np.concatenate(xs), "eps": np.concatenate(noise, axis=1)})

        elbo_served = np.concatenate([bounds.elbo for bounds in served()])
        elbo_fused = in_graph()[0]
        served_rate, fused_rate = rate(served, args.duration), rate(in_graph, args.duration)
        print(
            json.dumps(
                {
                    "requests_per_batch": requests,
                    "rows_per_request": rows,
                    "k": k,
                    "served_batches_per_s": round(served_rate, 1),
                    "fused_batches_per_s": round(fused_rate, 1),
                    "fused_over_served": round(fused_rate / served_rate, 2),
                    "max_abs_elbo_difference": float(np.max(np.abs(elbo_served - elbo_fused))),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
