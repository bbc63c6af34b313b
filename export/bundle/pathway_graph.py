"""The pathway graph (``pathway.onnx``): RaPP's normalized-pathway distance (Kim et al., "RaPP: Novelty
Detection with Reconstruction along Projection Pathway", ICLR 2020), the ``pathway`` anomaly score.

A reconstruction error compares x with its reconstruction x' only in the input space. RaPP also
compares them along the encoder's path: each hidden layer's activations h_l(x) and h_l(x'), where
x' = E[x | z = E[z|x]]. The differences d_l = h_l(x) - h_l(x') of normal rows are far from isotropic
(a few directions carry most of them), so each layer's difference is measured in the units of the
normal rows' own spread: fitted once on the training rows, c_l = (d_l - m_l) V_l diag(1 / sd_l), the
principal directions V_l and their standard deviations sd_l from an SVD (directions whose singular
value is below RELATIVE_RANK_FLOOR of the largest are dropped: dead units, and numerical noise).
The score is sum_l |c_l|^2, a Mahalanobis distance per layer summed over the layers; on a normal row
it is about the summed rank.

The fit must not use the rows the score is calibrated on (the calibration would then see smaller
distances than new normal rows get): ``export_bundle`` fits on its ``pathway_data`` (vae-train: the
training rows) and calibrates on the calibration rows, as every other score.

Precision: the layers and the projections in float32, the squares and sums in float64 (a far-out row's
coordinates may reach ~1e26, whose square overflows float32). The encoder sees the row clipped to
+-ENCODER_INPUT_LIMIT and the posterior mean is clipped to the latent box, as the other graphs' callers
do (``vae_math``), so every finite row gets a finite distance.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vae_serve.core import vae_math
from vae_serve.core.manifest import GraphSpec, PathwayGraph, PathwayLayer, TensorSpec
from vae_serve.core.runtime import PATHWAY_INPUT, PATHWAY_OUTPUT
from vae_serve.export.bundle.onnx_export import BATCH_AXIS, export_graph, parity

PATHWAY_FILE = "pathway.onnx"
# Rows the statistics are fitted on, at most (a fixed random subset beyond): enough for a 1024-unit
# layer's covariance, and an SVD of seconds.
MAX_FIT_ROWS = 10_000
# A direction is kept while its singular value is at least this fraction of the layer's largest.
RELATIVE_RANK_FLOOR = 1e-3
# Rows of each forward pass while fitting (bounds memory for wide layers).
FIT_BATCH_ROWS = 1024
GOLDEN_ROWS = 4
# The golden case and the loader's check: ONNX Runtime against torch, float32 layers in another order;
# measured at most 7.4e-7 relative on six bundles (five Fashion classes, digits), so 1e-4 leaves room.
GOLDEN_ATOL, GOLDEN_RTOL = 1e-3, 1e-4


class PathwayDistance(nn.Module):
    """x [batch, D] (model space) -> (sum over layers of |(h_l(x) - h_l(x') - centre_l) @ projection_l|^2,)
    in float64, one value per row. ``encoder`` and ``decoder`` are the flat modules the bundle's graphs
    come from; ``pathway`` maps rows to the hidden activations (a sequence of [batch, H_l])."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        pathway: nn.Module,
        likelihood: str,
        centres: Sequence[np.ndarray],
        projections: Sequence[np.ndarray],
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.pathway = encoder, decoder, pathway
        self.bernoulli = likelihood == "bernoulli"
        for index, (centre, projection) in enumerate(zip(centres, projections, strict=True)):
            self.register_buffer(f"centre_{index}", torch.from_numpy(np.asarray(centre, np.float32)))
            self.register_buffer(f"projection_{index}", torch.from_numpy(np.asarray(projection, np.float32)))
        self.layers = len(centres)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        seen = torch.clamp(x, -vae_math.ENCODER_INPUT_LIMIT, vae_math.ENCODER_INPUT_LIMIT)
        first, second = reconstruction_pathways(self.encoder, self.decoder, self.pathway, self.bernoulli, seen)
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for index in range(self.layers):
            centre, projection = getattr(self, f"centre_{index}"), getattr(self, f"projection_{index}")
            coordinates = (first[index] - second[index] - centre) @ projection
            total = total + coordinates.double().square().sum(-1)
        return (total,)


def reconstruction_pathways(encoder, decoder, pathway, bernoulli: bool, x: torch.Tensor) -> tuple[list, list]:
    """(the hidden activations of x, those of its reconstruction E[x | z = E[z|x]]), layer by layer."""
    z_mean = torch.clamp(encoder(x)[0], -vae_math.LATENT_LIMIT, vae_math.LATENT_LIMIT)
    outputs = decoder(z_mean)
    reconstruction = torch.sigmoid(outputs[0]) if bernoulli else outputs[0]
    return list(pathway(x)), list(pathway(reconstruction))


@torch.no_grad()
def fit_statistics(
    encoder: nn.Module, decoder: nn.Module, pathway: nn.Module, likelihood: str, x_fit: np.ndarray, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(centres, projections, rows used): each layer's mean difference and its whitening projection
    [H_l, K_l] onto the K_l kept principal directions, fitted on at most MAX_FIT_ROWS rows of ``x_fit``."""
    if len(x_fit) > MAX_FIT_ROWS:
        x_fit = x_fit[np.sort(np.random.default_rng(seed).choice(len(x_fit), MAX_FIT_ROWS, replace=False))]
    batches = []
    for start in range(0, len(x_fit), FIT_BATCH_ROWS):
        rows = torch.from_numpy(np.ascontiguousarray(x_fit[start : start + FIT_BATCH_ROWS], dtype=np.float32))
        first, second = reconstruction_pathways(encoder, decoder, pathway, likelihood == "bernoulli", rows)
        batches.append([(a - b).double().numpy() for a, b in zip(first, second, strict=True)])
    centres, projections = [], []
    for parts in zip(*batches, strict=True):
        d = np.concatenate(parts)
        centre = d.mean(axis=0)
        _, singular, directions = np.linalg.svd(d - centre, full_matrices=False)
        # A layer whose differences never vary (all units dead) keeps no direction and adds 0.
        keep = singular > RELATIVE_RANK_FLOOR * singular[0]
        centres.append(centre)
        projections.append(directions[keep].T / (singular[keep] / math.sqrt(len(d) - 1)))
    return centres, projections, len(x_fit)


def add_pathway_graph(
    directory,
    encoder: nn.Module,
    decoder: nn.Module,
    pathway: nn.Module,
    likelihood: str,
    x_fit: np.ndarray,
    x_check: np.ndarray,
    seed: int,
    fit_rows_description: str,
) -> PathwayGraph:
    """Fit the statistics on ``x_fit`` (model space), write ``pathway.onnx`` into ``directory`` and
    return its manifest entry, with a golden case from torch on ``x_check``'s first rows.

    Raises:
        ExportError: the graph does not export, or ONNX Runtime disagrees with torch on ``x_check``.
    """
    pathway.eval()
    centres, projections, fit_rows = fit_statistics(encoder, decoder, pathway, likelihood, x_fit, seed)
    module = PathwayDistance(encoder, decoder, pathway, likelihood, centres, projections).eval()
    path = directory / PATHWAY_FILE
    check = np.ascontiguousarray(x_check, dtype=np.float32)
    opset = export_graph(module, torch.from_numpy(check[:2]), path, PATHWAY_INPUT, (PATHWAY_OUTPUT,))
    parity(module, path, PATHWAY_INPUT, (PATHWAY_OUTPUT,), check)
    golden = check[:GOLDEN_ROWS]
    with torch.no_grad():
        (expected,) = module(torch.from_numpy(golden))
    return PathwayGraph(
        graph=GraphSpec(
            file=PATHWAY_FILE,
            opset=opset,
            inputs=[TensorSpec(name=PATHWAY_INPUT, shape=[BATCH_AXIS, check.shape[1]], dtype="float32")],
            outputs=[TensorSpec(name=PATHWAY_OUTPUT, shape=[BATCH_AXIS], dtype="float64")],
        ),
        fit_rows=fit_rows,
        fit_rows_description=fit_rows_description,
        layers=[
            PathwayLayer(features=len(centre), rank=projection.shape[1])
            for centre, projection in zip(centres, projections, strict=True)
        ],
        atol=GOLDEN_ATOL,
        rtol=GOLDEN_RTOL,
        inputs={PATHWAY_INPUT: golden.tolist()},
        outputs={PATHWAY_OUTPUT: expected.tolist()},
    )
