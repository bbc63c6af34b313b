"""Export the encoder and decoder to ONNX, check the graphs, and measure torch/ONNX Runtime parity."""

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

from vae_serve.core.runtime import DECODER_INPUT, ENCODER_INPUT, ENCODER_OUTPUTS, make_session

# Max |torch - ONNX Runtime| allowed on any output, in the output's units (logits, nats of
# log-variance, raw feature units). float32 kernels differ by ~1e-6 here; 1e-4 leaves room for
# other CPUs' vector widths while still catching any real export error.
PARITY_TOLERANCE = 1e-4
# Parity is measured on at most this many validation rows.
PARITY_EXAMPLES = 256
BATCH_AXIS = "batch"
# Loggers (with their children) silenced while exporting: torch.export, dynamo, FX and the ONNX
# exporter log graphs and guards at WARNING, which the ExportError already sums up.
EXPORTER_LOGGERS = ("torch", "onnx", "onnxscript", "onnx_ir")


class ExportError(Exception):
    """The module does not export, the exported graph is invalid, or it disagrees with the PyTorch module."""


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _export_failure(role: str, error: Exception) -> ExportError:
    """What to tell the user when torch.onnx.export fails: the op it stopped at, and the first cause
    from the exporter's "Exception summary" (its own wording names what is unsupported)."""
    text = _ANSI_COLOUR.sub("", str(error))
    ops = re.findall(r"target=(?:torch\.ops\.)?([\w.]+)", text)
    summary = text.split("## Exception summary", 1)[-1]
    causes = [line.split(">: ", 1)[-1].strip() for line in summary.splitlines() if line.startswith("<class ")]
    cause = causes[0] if causes else next((line.strip() for line in text.splitlines() if line.strip()), "")
    where = f" at operation {ops[0]}" if ops else ""
    return ExportError(
        f"the {role} does not export to ONNX{where} ({type(error).__name__}: {cause[:500]}). Replace that "
        "operation with one ONNX supports, or move data-dependent Python control flow out of forward()"
    )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Drop what the exporter prints and logs while it runs: its narration of passes (on stdout,
    where vae-train's JSON line belongs), the FX graph it prints when tracing fails, its warnings and
    its log records. Its failure still reaches the user, as one ``ExportError``."""
    names = [
        name
        for name in [*EXPORTER_LOGGERS, *logging.root.manager.loggerDict]
        if name.split(".", 1)[0] in EXPORTER_LOGGERS
    ]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    dropped = io.StringIO()
    try:
        with contextlib.redirect_stdout(dropped), contextlib.redirect_stderr(dropped), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _export(module, args, path, **options) -> None:
    """torch.onnx.export, with the exporter's failure (unsupported op, dynamic shapes) as an ExportError."""
    try:
        torch.onnx.export(module, args, path, **options)
    except Exception as error:  # the exporter raises many unrelated types; all mean "does not export"
        raise _export_failure(Path(path).stem, error) from None


def export_graph(
    module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: tuple[str, ...]
) -> int:
    """Export ``module`` with a dynamic batch axis; returns the graph's ONNX opset."""
    module.eval()
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    with _quiet_exporter():
        _export(
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
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path.name}: the exported graph is not valid ONNX ({error})") from None
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


@torch.no_grad()
def parity(
    module: torch.nn.Module, path: Path, input_name: str, output_names: tuple[str, ...], inputs: np.ndarray
) -> dict[str, float]:
    """Max |torch - ONNX Runtime| per output on ``inputs``; raises ExportError above tolerance."""
    expected = module(torch.from_numpy(inputs))
    actual = make_session(path).run(list(output_names), {input_name: inputs})
    differences, excess = {}, {}
    for name, want, got in zip(output_names, expected, actual, strict=True):
        gap = np.abs(want.numpy() - got)
        differences[name] = float(np.max(gap))
        # Relative above 1: a large conv model's big logits carry float32 rounding proportional to them.
        excess[name] = float(np.max(gap / (PARITY_TOLERANCE * np.maximum(1.0, np.abs(want.numpy())))))
    worst = max(excess, key=excess.get)
    if not excess[worst] <= 1.0:
        raise ExportError(
            f"{path.name}: ONNX Runtime disagrees with torch on output {worst!r} by up to {differences[worst]:.3g} "
            f"(tolerance {PARITY_TOLERANCE:g} x max(1, |value|)); check for ops whose ONNX form differs "
            "(e.g. custom autograd functions, in-place randomness in forward, eval-mode differences)"
        )
    return differences


def export_graphs(encoder: torch.nn.Module, decoder: torch.nn.Module, directory: Path, parity_x: np.ndarray) -> dict:
    """Write encoder.onnx and decoder.onnx into ``directory``; return what the manifest records.

    Args:
        encoder: x [batch, D] -> (z_mean, z_logvar) (``user_model.FlatEncoder``).
        decoder: z [batch, L] -> its ``output_names`` (``user_model.FlatDecoder``).
        directory: where to write.
        parity_x: rows in the model's space on which ONNX Runtime must match torch.

    Raises:
        ExportError: a module does not export, the graph is invalid, or parity fails.
    """
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        parity_z = encoder(torch.from_numpy(parity_x))[0].numpy()
    graphs = {}
    for role, module, input_name, outputs, inputs in (
        ("encoder", encoder, ENCODER_INPUT, ENCODER_OUTPUTS, parity_x),
        ("decoder", decoder, DECODER_INPUT, decoder.output_names, parity_z),
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
