"""ONNX Runtime sessions for one VAE: numpy in, numpy out. No grpc, no asyncio, no torch, no
OpenTelemetry: a graph run is observed only through the ``GraphSpan`` hook its owner hands in."""

import copy
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vae_serve.core import vae_math
from vae_serve.core.preprocessing import Affine, to_model

ENCODER_INPUT = "x"
ENCODER_OUTPUTS = ("z_mean", "z_logvar")
DECODER_INPUT = "z"
DECODER_OUTPUTS = {"bernoulli": ("logits",), "gaussian": ("mean", "log_scale")}
BOUNDS_INPUTS = ("x", "eps")
# In the order of core.bounds.BoundEstimates' fields.
BOUNDS_OUTPUTS = ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error")
PATHWAY_INPUT, PATHWAY_OUTPUT = "x", "pathway_distance"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
# ManifestBody.reconstruction_units: raw squared errors in the model's space, or divided by feature_scale**2.
RECONSTRUCTION_UNITS = ("model", "standardized")
CUDA = "CUDAExecutionProvider"

log = logging.getLogger(__name__)
# A hook around each graph run: (graph name, rows) -> the block the run happens in. The server's
# tracing hands one in (a "graph run" span); the core itself knows nothing of tracing.
GraphSpan = Callable[[str, int], AbstractContextManager]


def run_graph(
    session: ort.InferenceSession,
    graph: str,
    outputs: list[str],
    feeds: dict[str, np.ndarray],
    graph_span: GraphSpan | None = None,
) -> list:
    """``session.run``, inside ``graph_span(graph, rows)`` when a hook is given.

    Args:
        session: the graph's inference session.
        graph: its name for the hook ("encoder", "decoder", "bounds").
        outputs: the output names to return, in order.
        feeds: input name -> array; the first one's length is the rows the hook is told.
        graph_span: the hook, or None (no block at all: one test of None per run).

    Returns:
        The outputs' arrays, in the order of ``outputs``.
    """
    if graph_span is None:
        return session.run(outputs, feeds)
    with graph_span(graph, len(next(iter(feeds.values())))):
        return session.run(outputs, feeds)


def make_session(
    path: Path, providers: Sequence[str] = DEFAULT_PROVIDERS, intra_op_threads: int = 0
) -> ort.InferenceSession:
    """One inference session; ``intra_op_threads=0`` lets ONNX Runtime choose."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


class OnnxVae:
    """An encoder and a decoder graph plus the likelihood that interprets the decoder's outputs.

    ``InferenceSession.run`` is thread-safe and releases the GIL, so one instance serves many
    threads. ``encode``, ``decode`` and ``log_likelihood`` work in the model's space; rows as
    clients send them go through ``to_model`` first (the bundle's preprocessing).

    ``error_weights`` [D] float64 multiply each feature's squared reconstruction error
    (``reconstruction_error_weights``): 1 / feature_scale**2 for a bundle whose reconstruction
    units are "standardized", None for errors in the model's units.
    """

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        likelihood: str,
        preprocessing: Affine | None = None,
        bounds: ort.InferenceSession | None = None,
        graph_span: GraphSpan | None = None,
        error_weights: np.ndarray | None = None,
        pathway: ort.InferenceSession | None = None,
    ) -> None:
        if likelihood not in DECODER_OUTPUTS:
            raise ValueError(f"unknown likelihood {likelihood!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.bounds = bounds  # the fused bounds graph, when the bundle has one
        self.pathway = pathway  # the pathway score's graph, when the bundle has one
        self.likelihood = likelihood
        self.decoder_outputs = DECODER_OUTPUTS[likelihood]
        self.preprocessing = preprocessing
        self.graph_span = graph_span  # around each graph run (the server's tracing), or None
        self.error_weights = error_weights

    def observed(self, graph_span: GraphSpan | None) -> "OnnxVae":
        """This model with ``graph_span`` around each graph run: a copy sharing the sessions, so
        the loaded bundle itself is left as it was."""
        if graph_span is self.graph_span:
            return self
        observed = copy.copy(self)
        observed.graph_span = graph_span
        return observed

    def to_model(self, x_raw: np.ndarray) -> np.ndarray:
        """Rows as clients send them -> the model's space (the same array when there is no preprocessing)."""
        return to_model(self.preprocessing, x_raw)

    @classmethod
    def from_files(
        cls,
        encoder_path: Path,
        decoder_path: Path,
        likelihood: str,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int = 0,
        preprocessing: Affine | None = None,
    ) -> "OnnxVae":
        return cls(
            make_session(encoder_path, providers, intra_op_threads),
            make_session(decoder_path, providers, intra_op_threads),
            likelihood,
            preprocessing,
        )

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [batch, features] float32 -> (posterior mean, posterior log-variance), each [batch, latent].

        The encoder sees ``vae_math.encoder_view(x)`` and its outputs are held to
        ``vae_math.bounded_posterior``'s box, so any finite row gets a finite posterior (see vae_math).
        """
        feeds = {ENCODER_INPUT: vae_math.encoder_view(x)}
        z_mean, z_logvar = run_graph(self.encoder, "encoder", list(ENCODER_OUTPUTS), feeds, self.graph_span)
        return vae_math.bounded_posterior(z_mean, z_logvar)

    def decode(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """z [batch, latent] float32 -> the likelihood's parameters by output name, each [batch, features]."""
        values = run_graph(self.decoder, "decoder", list(self.decoder_outputs), {DECODER_INPUT: z}, self.graph_span)
        return dict(zip(self.decoder_outputs, values, strict=True))

    @functools.cached_property
    def latent_dim(self) -> int:
        return int(self.encoder.get_outputs()[0].shape[-1])

    def run_bounds(self, x: np.ndarray, eps: np.ndarray) -> list[np.ndarray]:
        """The bounds graph: x [n, D] (model space) and eps [k, n, L] -> ``BOUNDS_OUTPUTS``, each [n] float64."""
        feeds = {BOUNDS_INPUTS[0]: x, BOUNDS_INPUTS[1]: eps}
        return run_graph(self.bounds, "bounds", list(BOUNDS_OUTPUTS), feeds, self.graph_span)

    def run_pathway(self, x: np.ndarray) -> np.ndarray:
        """The pathway graph: x [n, D] (model space) -> each row's pathway distance [n] float64."""
        feeds = {PATHWAY_INPUT: np.ascontiguousarray(x, dtype=np.float32)}
        return run_graph(self.pathway, "pathway", [PATHWAY_OUTPUT], feeds, self.graph_span)[0]

    def log_likelihood(self, x: np.ndarray, decoded: dict[str, np.ndarray]) -> np.ndarray:
        """log p(x|z) summed over features; broadcasts x against leading sample axes."""
        log_prob = self._log_likelihood(x, decoded)
        if np.isfinite(log_prob).all():
            return log_prob
        # float32 overflowed: a Gaussian residual beyond ~1e19 scales squared (a far out-of-distribution
        # input under a tight decoder scale), or a sum of huge logits. Redo it in float64, where the
        # square of any float32 residual, and any sum of float32 terms, is finite (merely huge).
        return self._log_likelihood(x.astype(np.float64), {k: v.astype(np.float64) for k, v in decoded.items()})

    def _log_likelihood(self, x: np.ndarray, decoded: dict[str, np.ndarray]) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if self.likelihood == "bernoulli":
                return vae_math.bernoulli_log_prob(x, decoded["logits"])
            return vae_math.gaussian_log_prob(x, decoded["mean"], decoded["log_scale"])

    def expected_x(self, decoded: dict[str, np.ndarray]) -> np.ndarray:
        """E[x|z]: Bernoulli probabilities, or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            # sigmoid(l) = exp(-softplus(-l)): exact, and no overflow warning for large |l|.
            return np.exp(-np.logaddexp(0.0, -decoded["logits"]))
        return decoded["mean"]


def reconstruction_error_weights(units: str, likelihood_parameters: Mapping, num_features: int) -> np.ndarray | None:
    """The per-feature weights of the squared reconstruction errors in ``units``.

    Args:
        units: "model" (raw squared errors) or "standardized" (divided by feature_scale**2).
        likelihood_parameters: the manifest's ``likelihood.parameters``; "standardized" reads its
            ``feature_scale``, the D per-feature scales vae-train's Gaussian bundles record.
        num_features: D, the model's row width.

    Returns:
        None for "model" (today's errors, bit for bit), else 1 / feature_scale**2 [D] in float64.
        The scales are taken as the float32 values the graphs hold: a positive float32 is at least
        1.4e-45, so a weight is at most 5e89, and times the square of any float32 residual
        (at most ~4.6e77 in float64) it stays finite: a far-out row still gets a finite, huge error.

    Raises:
        ValueError: unknown units, or no usable feature_scale (missing, not D numbers, or a value
            that is not a finite positive float32).
    """
    if units not in RECONSTRUCTION_UNITS:
        raise ValueError(f"reconstruction_units {units!r} is unknown; use one of {', '.join(RECONSTRUCTION_UNITS)}")
    if units == "model":
        return None
    scale = _feature_scale(likelihood_parameters.get("feature_scale"), num_features)
    return 1.0 / np.square(scale.astype(np.float64))


def _feature_scale(values, num_features: int) -> np.ndarray:
    """``feature_scale`` as D finite positive float32 values, or a ValueError saying what is wrong."""
    need = (
        "reconstruction_units 'standardized' needs likelihood.parameters.feature_scale: "
        f"{num_features} positive numbers"
    )
    if values is None:
        raise ValueError(f"{need}, and the manifest has none (export with reconstruction_units 'model')")
    try:
        with np.errstate(over="ignore"):
            scale = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{need}, got a value that is not a list of numbers") from None
    if scale.shape != (num_features,):
        raise ValueError(f"{need}, got shape {list(scale.shape)}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"{need}, got a value that is zero, negative or not a finite float32")
    return scale


class DeviceUnavailable(RuntimeError):
    """``--device cuda`` was asked for and ONNX Runtime cannot provide it."""


def providers_for(device: str) -> list[str]:
    """Execution providers for ``cpu``, ``cuda`` or ``auto`` (CUDA when available, else CPU)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if CUDA in available:
        return [CUDA, "CPUExecutionProvider"]
    if device == "cuda":
        raise DeviceUnavailable(
            f"device cuda (--device / VAE_DEVICE): this onnxruntime build has no {CUDA} (it has {available}); "
            "install onnxruntime-gpu with a matching CUDA runtime, or use --device cpu or auto"
        )
    log.warning("device auto: this onnxruntime build has no %s (it has %s); serving on the CPU", CUDA, available)
    return ["CPUExecutionProvider"]


def check_device(sessions: Sequence[ort.InferenceSession], device: str) -> list[str]:
    """The providers really in use; for ``cuda``, fail if a session silently fell back to the CPU
    (ONNX Runtime does that when the CUDA libraries fail to load)."""
    in_use = sessions[0].get_providers()
    fell_back = device != "cpu" and CUDA in ort.get_available_providers()
    fell_back = fell_back and any(CUDA not in session.get_providers() for session in sessions)
    if fell_back and device == "cuda":
        raise DeviceUnavailable(
            "device cuda (--device / VAE_DEVICE): ONNX Runtime could not initialise CUDA for this model "
            "(see its log above); check the NVIDIA driver and CUDA/cuDNN libraries, or use --device cpu or auto"
        )
    if fell_back:
        log.warning("device auto: ONNX Runtime could not initialise CUDA for this model; it runs on the CPU")
    return in_use
