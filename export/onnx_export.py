"""Export the encoder and decoder to ONNX, check the graphs, and measure torch/ONNX Runtime parity."""

import contextlib
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from vae_serve.core.runtime import DECODER_INPUT, ENCODER_INPUT, ENCODER_OUTPUTS, make_session
from vae_serve.export.model import Vae

# Max |torch - ONNX Runtime| allowed on any output, in the output's units (logits, nats of
# log-variance, raw feature units). float32 kernels differ by ~1e-6 here; 1e-4 leaves room for
# other CPUs' vector widths while still catching any real export error.
PARITY_TOLERANCE = 1e-4
# Parity is measured on at most this many validation rows.
PARITY_EXAMPLES = 256
BATCH_AXIS = "batch"


class ExportError(Exception):
    """The exported graph is invalid or disagrees with the PyTorch module."""


def _quiet_exporter_logs() -> None:
    # The exporter warns that torchvision (never used here) is missing; keep the user's log clean.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_graph(
    module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: tuple[str, ...]
) -> int:
    """Export ``module`` with a dynamic batch axis; returns the graph's ONNX opset."""
    _quiet_exporter_logs()
    module.eval()
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    # The exporter narrates its passes on stdout, where vae-train's JSON result line belongs.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecation notice
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=({0: batch},),
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


@torch.no_grad()
def parity(
    module: torch.nn.Module, path: Path, input_name: str, output_names: tuple[str, ...], inputs: np.ndarray
) -> dict[str, float]:
    """Max |torch - ONNX Runtime| per output on ``inputs``; raises ExportError above tolerance."""
    expected = module(torch.from_numpy(inputs))
    actual = make_session(path).run(list(output_names), {input_name: inputs})
    differences = {
        name: float(np.max(np.abs(want.numpy() - got)))
        for name, want, got in zip(output_names, expected, actual, strict=True)
    }
    worst = max(differences, key=differences.get)
    if not differences[worst] <= PARITY_TOLERANCE:
        raise ExportError(
            f"{path.name}: output {worst!r} differs from torch by {differences[worst]:.3g} > {PARITY_TOLERANCE:g}"
        )
    return differences


def export_vae(vae: Vae, directory: Path, parity_x: np.ndarray) -> dict:
    """Write encoder.onnx and decoder.onnx into ``directory``; return what the manifest records."""
    vae.eval()
    with torch.no_grad():
        parity_z = vae.encoder(torch.from_numpy(parity_x))[0].numpy()
    decoder_outputs = vae.decoder.output_names
    graphs = {}
    for role, module, input_name, outputs, inputs in (
        ("encoder", vae.encoder, ENCODER_INPUT, ENCODER_OUTPUTS, parity_x),
        ("decoder", vae.decoder, DECODER_INPUT, decoder_outputs, parity_z),
    ):
        path = directory / f"{role}.onnx"
        opset = export_graph(module, torch.from_numpy(inputs[:2]), path, input_name, outputs)
        graphs[role] = {
            "file": path.name,
            "opset": opset,
            "inputs": [{"name": input_name, "shape": [BATCH_AXIS, inputs.shape[1]], "dtype": "float32"}],
            "outputs": [],  # filled from the parity run's shapes below
            "parity_max_abs_diff": parity(module, path, input_name, outputs, inputs),
        }
        with torch.no_grad():
            results = module(torch.from_numpy(inputs[:1]))
        graphs[role]["outputs"] = [
            {"name": name, "shape": [BATCH_AXIS, int(value.shape[1])], "dtype": "float32"}
            for name, value in zip(outputs, results, strict=True)
        ]
    return graphs
