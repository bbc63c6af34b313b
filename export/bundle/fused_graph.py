"""The bounds graph: the bundle's encoder and decoder joined, with the ELBO, its terms and the IWAE
bound computed inside ONNX (``bounds.onnx``).

It computes what ``vae_serve.core.bounds`` computes in numpy, from the same inputs: the rows x
[n, D] in the model's space and the request's noise eps [k, n, L], drawn as the reproducibility
protocol says. One ``Session.run`` replaces two graph runs and some twenty numpy calls, all of it
outside the GIL, and the same file runs unchanged on any ONNX Runtime (Triton's or KServe's
backends included).

Precision follows the numpy path: the draws z = mean + exp(logvar / 2) * eps, the decoder and
log p(x|z) in float32; log p(z), log q(z|x), the KL and every reduction over the k draws in
float64, so a posterior so wide that exp(logvar) overflows float32 still gives finite bounds.
Every reduction is along the last axis of a row's own values, so a row's outputs do not depend on
the other rows of the batch. The posterior is boxed as ``vae_math`` boxes it (the encoder sees each
value clipped to +-ENCODER_INPUT_LIMIT; its mean and log-variance are clipped to the latent box),
while the likelihood is of the row as sent: the graph and the numpy path use the same proposal for
every row, far out-of-distribution ones included.
"""

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from vae_serve.core import vae_math
from vae_serve.core.bounds import bounds_from_noise
from vae_serve.core.manifest import BoundsGraph, GraphSpec, TensorSpec
from vae_serve.core.runtime import (
    BOUNDS_INPUTS,
    BOUNDS_OUTPUTS,
    DECODER_INPUT,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    OnnxVae,
)

BOUNDS_FILE = "bounds.onnx"
LOG_2PI = math.log(2.0 * math.pi)
ENCODER_PREFIX, DECODER_PREFIX = "encoder/", "decoder/"
# The boxed posterior (vae_math.bounded_posterior) that the draws and the latent terms use.
BOXED_MEAN, BOXED_LOGVAR = "z_mean_boxed", "z_logvar_boxed"
BOX_ENDS = (("min", -1.0), ("max", 1.0))
MIN_OPSET = 18  # the reductions below take their axes as an input
# The golden case: a few rows with a few draws each. Tolerances: the graph and numpy sum float32
# terms in different orders; measured differences are ~1e-7 of the value (docs/bundle.md).
GOLDEN_ROWS, GOLDEN_DRAWS = 4, 3
GOLDEN_ATOL, GOLDEN_RTOL, GOLDEN_STANDARD_ERROR_RTOL = 1e-4, 1e-5, 1e-2


class _Builder:
    """Nodes and constants of one graph, each output named after what it holds."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output


def _likelihood(b: _Builder, likelihood: str) -> str:
    """log p(x|z) [n, k] in float32 from x3 [n, 1, D] and the decoder's outputs reshaped to [n, k, D]."""
    if likelihood == "bernoulli":
        # sum_d x_d l_d - softplus(l_d), softplus(l) = max(l, 0) + log(1 + exp(-|l|)): stable for any
        # l, like numpy's logaddexp(0, l), and built from ops ONNX Runtime vectorises (its own
        # Softplus kernel is scalar code: 200 us of a 440 us run at 256 rows, measured).
        logits = "decoded_logits"
        tail = b.op("Exp", [b.op("Neg", [b.op("Abs", [logits], "abs_logits")], "neg_abs_logits")], "exp_neg_abs")
        log1p = b.op("Log", [b.op("Add", [tail, b.const("one_f", np.float32(1.0))], "one_plus_tail")], "log1p_tail")
        softplus = b.op("Add", [b.op("Relu", [logits], "relu_logits"), log1p], "softplus")
        product = b.op("Mul", ["x3", logits], "x_times_logits")
        terms = b.op("Sub", [product, softplus], "log_px_terms")
    else:
        # sum_d -log(2 pi)/2 - log_scale_d - ((x_d - mean_d) exp(-log_scale_d))^2 / 2
        residual = b.op("Sub", ["x3", "decoded_mean"], "residual")
        inverse_scale = b.op("Exp", [b.op("Neg", ["decoded_log_scale"], "neg_log_scale")], "inverse_scale")
        standardized = b.op("Mul", [residual, inverse_scale], "standardized")
        half_square = b.op("Mul", [b.op("Mul", [standardized, standardized], "squared"), "half_f"], "half_squared")
        shifted = b.op(
            "Add", ["decoded_log_scale", b.const("half_log_2pi_f", np.float32(0.5 * LOG_2PI))], "log_scale_plus"
        )
        terms = b.op("Neg", [b.op("Add", [shifted, half_square], "neg_terms")], "log_px_terms")
    return b.op("ReduceSum", [terms, "last_axis"], "log_px", keepdims=0)


def _draw_nodes(b: _Builder, latent_dim: int) -> None:
    """Between the encoder and the decoder: the draws z [n, k, L] and the decoder's input [n k, L]."""
    b.const("half_f", np.float32(0.5))
    b.const("half", np.float64(0.5))
    b.const("neg_half", np.float64(-0.5))
    b.const("one", np.float64(1.0))
    b.const("log_2pi", np.float64(LOG_2PI))
    b.const("last_axis", np.array([-1], np.int64))
    b.const("row_axis", np.array([1], np.int64))
    b.const("flat_latent", np.array([-1, latent_dim], np.int64))
    b.const("minus_one", np.array([-1], np.int64))
    b.const("perm_start", np.array([0], np.int64))
    b.const("perm_end", np.array([2], np.int64))
    # The draws, [n, k, L]: the protocol's noise is [k, n, L]; rows first keeps each row's values together.
    b.op("Transpose", ["eps"], "eps_rows", perm=[1, 0, 2])
    mean_range = [b.const(f"latent_{end}", np.float32(sign * vae_math.LATENT_LIMIT)) for end, sign in BOX_ENDS]
    b.op("Clip", [ENCODER_PREFIX + ENCODER_OUTPUTS[0], *mean_range], BOXED_MEAN)
    logvar_range = [
        b.const("logvar_min", np.float32(vae_math.LOGVAR_MIN)),
        b.const("logvar_max", np.float32(vae_math.LOGVAR_MAX)),
    ]
    b.op("Clip", [ENCODER_PREFIX + ENCODER_OUTPUTS[1], *logvar_range], BOXED_LOGVAR)
    mean3 = b.op("Unsqueeze", [BOXED_MEAN, "row_axis"], "z_mean3")
    logvar3 = b.op("Unsqueeze", [BOXED_LOGVAR, "row_axis"], "z_logvar3")
    std3 = b.op("Exp", [b.op("Mul", [logvar3, "half_f"], "half_logvar")], "std3")
    z = b.op("Add", [mean3, b.op("Mul", [std3, "eps_rows"], "scaled_eps")], "z")
    b.op("Reshape", [z, "flat_latent"], DECODER_PREFIX + DECODER_INPUT)


def _bounds_nodes(b: _Builder, likelihood: str) -> None:
    """After the decoder: its outputs back to [n, k, D], the likelihood, the bounds."""
    shape = b.op("Shape", ["eps_rows"], "eps_rows_shape")
    n_k = b.op("Slice", [shape, "perm_start", "perm_end"], "n_k")
    b.op("Concat", [n_k, "minus_one"], "decoded_shape", axis=0)
    for name in DECODER_OUTPUTS[likelihood]:
        b.op("Reshape", [DECODER_PREFIX + name, "decoded_shape"], f"decoded_{name}")
    b.op("Unsqueeze", [ENCODER_INPUT, "row_axis"], "x3")
    log_px = _likelihood(b, likelihood)
    # The latent terms and the reductions over draws in float64.
    log_px64 = b.op("Cast", [log_px], "log_px64", to=TensorProto.DOUBLE)
    z64 = b.op("Cast", ["z"], "z64", to=TensorProto.DOUBLE)
    eps64 = b.op("Cast", ["eps_rows"], "eps64", to=TensorProto.DOUBLE)
    logvar64 = b.op("Cast", [BOXED_LOGVAR], "logvar64", to=TensorProto.DOUBLE)
    mean64 = b.op("Cast", [BOXED_MEAN], "mean64", to=TensorProto.DOUBLE)
    logvar64_3 = b.op("Unsqueeze", [logvar64, "row_axis"], "logvar64_3")

    def gaussian_log_density(square: str, extra: str | None, name: str) -> str:
        """sum_j -(log(2 pi) + [extra_j] + square_j) / 2 along the last axis."""
        total = b.op("Add", [square, "log_2pi"], f"{name}_a")
        if extra is not None:
            total = b.op("Add", [total, extra], f"{name}_b")
        return b.op("Mul", [b.op("ReduceSum", [total, "last_axis"], f"{name}_sum", keepdims=0), "neg_half"], name)

    log_pz = gaussian_log_density(b.op("Mul", [z64, z64], "z_squared"), None, "log_pz")
    log_qz = gaussian_log_density(b.op("Mul", [eps64, eps64], "eps_squared"), logvar64_3, "log_qz")
    log_w = b.op("Sub", [b.op("Add", [log_px64, log_pz], "log_px_pz"), log_qz], "log_weights")  # [n, k]
    reconstruction = b.op("ReduceMean", [log_px64, "last_axis"], "reconstruction", keepdims=0)
    kl_terms = b.op(
        "Sub",
        [
            b.op(
                "Sub",
                [
                    b.op("Add", [b.op("Exp", [logvar64], "var"), b.op("Mul", [mean64, mean64], "mean_sq")], "kl_a"),
                    "one",
                ],
                "kl_b",
            ),
            logvar64,
        ],
        "kl_terms",
    )
    kl = b.op("Mul", [b.op("ReduceSum", [kl_terms, "last_axis"], "kl_sum", keepdims=0), "half"], "kl")
    b.op("Sub", [reconstruction, kl], "elbo")
    # log mean_k w_k and its delta-method standard error, on the weights scaled by their maximum.
    peak = b.op("ReduceMax", [log_w, "last_axis"], "peak", keepdims=1)
    scaled = b.op("Exp", [b.op("Sub", [log_w, peak], "centered")], "scaled_weights")
    mean_w = b.op("ReduceMean", [scaled, "last_axis"], "mean_weight", keepdims=1)
    lme = b.op("Add", [b.op("Log", [mean_w], "log_mean_weight"), peak], "iwae_keep")
    b.op("Squeeze", [lme, "last_axis"], "iwae")
    k_1 = b.op("Gather", [b.op("Shape", [log_w], "weights_shape"), "row_axis"], "k_1")
    draws = b.op("Cast", [k_1], "k", to=TensorProto.DOUBLE)
    ddof_divisor = b.op("Max", [b.op("Sub", [draws, "one"], "k_minus_one"), "one"], "ddof_divisor")
    deviation = b.op("Sub", [scaled, mean_w], "deviation")
    variance = b.op(
        "Div", [b.op("ReduceSumSquare", [deviation, "last_axis"], "sum_sq_dev", keepdims=1), ddof_divisor], "variance"
    )
    ratio = b.op("Div", [b.op("Sqrt", [variance], "std_weight"), mean_w], "std_ratio")
    error = b.op("Div", [ratio, b.op("Sqrt", [draws], "sqrt_k")], "iwae_se_keep")
    b.op("Squeeze", [error, "last_axis"], "iwae_standard_error")


def bounds_model(
    encoder: onnx.ModelProto, decoder: onnx.ModelProto, likelihood: str, latent_dim: int
) -> onnx.ModelProto:
    """The bounds graph of an exported encoder and decoder (inputs x, eps; outputs ``BOUNDS_OUTPUTS``)."""
    encoder = compose.add_prefix(encoder, ENCODER_PREFIX)
    decoder = compose.add_prefix(decoder, DECODER_PREFIX)
    before, after = _Builder(), _Builder()
    # The encoder's view of the rows (vae_math.encoder_view); x itself stays what the likelihood sees.
    input_range = [
        before.const(f"encoder_input_{end}", np.float32(sign * vae_math.ENCODER_INPUT_LIMIT)) for end, sign in BOX_ENDS
    ]
    _draw_nodes(before, latent_dim)
    _bounds_nodes(after, likelihood)
    features = encoder.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        [
            helper.make_node("Clip", [ENCODER_INPUT, *input_range], [ENCODER_PREFIX + ENCODER_INPUT]),
            *encoder.graph.node,
            *before.nodes,
            *decoder.graph.node,
            *after.nodes,
        ],
        "vae_bounds",
        [
            helper.make_tensor_value_info(ENCODER_INPUT, TensorProto.FLOAT, ["batch", features]),
            helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["k", "batch", latent_dim]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.DOUBLE, ["batch"]) for name in BOUNDS_OUTPUTS],
        initializer=[*encoder.graph.initializer, *decoder.graph.initializer, *before.constants, *after.constants],
    )
    opsets: dict[str, int] = {}
    for entry in [*encoder.opset_import, *decoder.opset_import]:
        opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    opsets[""] = max(opsets.get("", 0), MIN_OPSET)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in opsets.items()])
    model.ir_version = max(encoder.ir_version, decoder.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_bounds_graph(directory: Path, likelihood: str, latent_dim: int) -> GraphSpec:
    """Write ``bounds.onnx`` beside the exported encoder.onnx and decoder.onnx; returns its manifest entry."""
    model = bounds_model(
        onnx.load(directory / "encoder.onnx"), onnx.load(directory / "decoder.onnx"), likelihood, latent_dim
    )
    onnx.save(model, directory / BOUNDS_FILE)
    features = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    return GraphSpec(
        file=BOUNDS_FILE,
        opset=next(entry.version for entry in model.opset_import if entry.domain == ""),
        inputs=[
            TensorSpec(name=BOUNDS_INPUTS[0], shape=["batch", features], dtype="float32"),
            TensorSpec(name=BOUNDS_INPUTS[1], shape=["k", "batch", latent_dim], dtype="float32"),
        ],
        outputs=[TensorSpec(name=name, shape=["batch"], dtype="float64") for name in BOUNDS_OUTPUTS],
    )


def add_bounds_graph(directory: Path, vae: OnnxVae, latent_dim: int, x_model: np.ndarray, seed: int) -> BoundsGraph:
    """Write ``bounds.onnx`` for the graphs in ``directory`` and its manifest entry, with a golden case
    whose outputs come from the numpy path (``vae``, which must not use a bounds graph itself)."""
    spec = write_bounds_graph(directory, vae.likelihood, latent_dim)
    x = np.ascontiguousarray(x_model[:GOLDEN_ROWS], dtype=np.float32)
    eps = np.random.default_rng(seed).standard_normal((GOLDEN_DRAWS, len(x), latent_dim), np.float32)
    expected = bounds_from_noise(vae, x, eps)
    return BoundsGraph(
        graph=spec,
        atol=GOLDEN_ATOL,
        rtol=GOLDEN_RTOL,
        standard_error_rtol=GOLDEN_STANDARD_ERROR_RTOL,
        inputs={BOUNDS_INPUTS[0]: x.tolist(), BOUNDS_INPUTS[1]: eps.tolist()},
        outputs={name: getattr(expected, name).tolist() for name in BOUNDS_OUTPUTS},
    )
