"""The manifest of an exported model, built from ``vae_serve.core.manifest``'s typed sections: what
the model takes and how raw inputs map into it, its likelihood, its graphs, how it was trained,
exported and checked. Shared by ``export_bundle`` (any user's model) and ``vae-train``.
"""

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from vae_serve.core.manifest import (
    FORMAT_VERSION,
    BoundsGraph,
    Calibration,
    Golden,
    GoldenCase,
    GraphSpec,
    InputSpec,
    LatentMap,
    LikelihoodSpec,
    ManifestBody,
    Metrics,
    PathwayGraph,
    Preprocessing,
)
from vae_serve.core.runtime import DECODER_OUTPUTS, ENCODER_OUTPUTS
from vae_serve.export.bundle.onnx_export import PARITY_TOLERANCE
from vae_serve.export.models.config import TrainConfig, config_record
from vae_serve.export.models.training import TrainResult
from vae_serve.export.models.vae import MIN_STANDARDIZED_SCALE, Vae
from vae_serve.export.sources.splits import Splits

GOLDEN_EXAMPLES = 4
# Golden outputs are torch's, checked against ONNX Runtime at load: same tolerance as export parity.
GOLDEN_ATOL = 1e-4
GOLDEN_RTOL = 1e-4
PRODUCER_PACKAGES = ("vae-serve", "torch", "onnx", "onnxruntime", "onnxscript", "numpy")


def producer_versions() -> dict[str, str]:
    """Versions of the packages that wrote the bundle ("unknown" for one not installed)."""
    versions = {}
    for package in PRODUCER_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


LOG_PROBS = {
    "bernoulli": "sum_d x_d * l_d - softplus(l_d)",
    "gaussian": "sum_d -0.5*log(2*pi) - log_scale_d - 0.5*((x_d - mean_d)/exp(log_scale_d))^2",
}


def generic_likelihood_spec(likelihood: str, **parameters) -> LikelihoodSpec:
    """p(x|z) as every bundle states it: the decoder's outputs and the log-density, plus ``parameters``."""
    return LikelihoodSpec(
        name=likelihood,
        parameters={
            "decoder_outputs": list(DECODER_OUTPUTS[likelihood]),
            "log_prob": LOG_PROBS[likelihood],
            **parameters,
        },
    )


def likelihood_spec(vae: Vae) -> LikelihoodSpec:
    """vae-train's p(x|z); for a Gaussian, also the scale and the standardization inside the graphs."""
    if vae.likelihood == "bernoulli":
        return generic_likelihood_spec("bernoulli")
    decoder = vae.decoder
    scale = "learned per feature"
    if decoder.shared_scale:
        scale = "learned, one value shared by every feature"
        if decoder.standardized_residuals:
            scale = "learned, one value in per-feature standardized units (sigma_d = sigma * feature_scale_d)"
    return generic_likelihood_spec(
        "gaussian",
        **{
            "scale": f"{scale}, floored at min_standardized_scale * feature_scale",
            "min_standardized_scale": MIN_STANDARDIZED_SCALE,
            "standardization": "inside both graphs: encoder sees (x - feature_loc) / feature_scale",
            "feature_loc": decoder.scaling.loc.tolist(),
            "feature_scale": decoder.scaling.scale.tolist(),
        },
    )


def graph_specs(graphs: dict) -> dict[str, GraphSpec]:
    """The graphs ``export_vae`` wrote, as the manifest declares them (parity goes to ``export``)."""
    return {
        role: GraphSpec.model_validate({key: value for key, value in graph.items() if key != "parity_max_abs_diff"})
        for role, graph in graphs.items()
    }


def export_record(graphs: dict, parity_examples: int) -> dict:
    """How the graphs were exported, and how closely ONNX Runtime matched torch on them."""
    return {
        "exporter": "torch.onnx.export(dynamo=True)",
        "parity_tolerance": PARITY_TOLERANCE,
        "parity_examples": parity_examples,
        "parity_max_abs_diff": {role: graph["parity_max_abs_diff"] for role, graph in graphs.items()},
    }


def training_record(config: TrainConfig, splits: Splits, result: TrainResult) -> dict:
    """vae-train's config, the data and how training went, epoch by epoch."""
    return {
        **config_record(config),
        "data": splits.description,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 3),
        "history": result.history,
    }


@torch.no_grad()
def golden_examples(encoder: torch.nn.Module, decoder: torch.nn.Module, x: np.ndarray) -> Golden:
    """A few fixed inputs (model space) with torch's outputs of the flat graphs' modules, which the
    loader checks the exported graphs against."""
    x = x[:GOLDEN_EXAMPLES]
    encoded = encoder(torch.from_numpy(x))
    decoded = decoder(encoded[0])
    encoder_outputs = zip(ENCODER_OUTPUTS, encoded, strict=True)
    decoder_outputs = zip(decoder.output_names, decoded, strict=True)
    return Golden(
        atol=GOLDEN_ATOL,
        rtol=GOLDEN_RTOL,
        encoder=GoldenCase(
            inputs={"x": x.tolist()}, outputs={name: value.numpy().tolist() for name, value in encoder_outputs}
        ),
        decoder=GoldenCase(
            inputs={"z": encoded[0].numpy().tolist()},
            outputs={name: value.numpy().tolist() for name, value in decoder_outputs},
        ),
    )


def build_manifest(
    *,
    name: str,
    version: str,
    input_spec: InputSpec,
    preprocessing: Preprocessing,
    latent_dim: int,
    likelihood: LikelihoodSpec,
    graphs: dict,
    training: dict,
    metrics: Metrics,
    calibration: Calibration,
    golden: Golden,
    parity_examples: int,
    bounds_graph: BoundsGraph | None = None,
    pathway_graph: PathwayGraph | None = None,
    default_score: str | None = None,
    reconstruction_units: str = "model",
    latent_map: LatentMap | None = None,
) -> ManifestBody:
    """The manifest of an exported model, ready to seal (``writer.write_manifest``).

    Raises:
        pydantic.ValidationError: a section breaks the schema.
    """
    return ManifestBody(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        producer=producer_versions(),
        input=input_spec,
        preprocessing=preprocessing,
        latent_dim=latent_dim,
        likelihood=likelihood,
        graphs=graph_specs(graphs),
        training=training,
        metrics=metrics,
        export=export_record(graphs, parity_examples),
        calibration=calibration,
        golden=golden,
        bounds_graph=bounds_graph,
        pathway_graph=pathway_graph,
        default_score=default_score,
        reconstruction_units=reconstruction_units,
        latent_map=latent_map,
    )
