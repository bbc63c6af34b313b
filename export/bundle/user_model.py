"""A user's own PyTorch encoder and decoder, put into the shape every bundle has, and checked in torch
before anything is exported.

The served graphs take and return flat rows: the encoder x [batch, D] -> (z_mean, z_logvar)
[batch, L]; the decoder z [batch, L] -> the likelihood's parameters, each [batch, D]. A user's
modules take their own shapes ([batch, C, H, W] images, [batch, D] tables), so ``FlatEncoder`` and
``FlatDecoder`` reshape around them, inside the exported graphs. ``check_model`` runs both on the
calibration rows and refuses, with what to change, a model whose shapes or values cannot be served.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vae_serve.core.runtime import DECODER_OUTPUTS, ENCODER_OUTPUTS
from vae_serve.export.bundle.onnx_export import PARITY_TOLERANCE

# Rows run through the modules at once while checking: bounds memory for large conv models.
CHECK_BATCH_ROWS = 256
# Rows independence is probed on: each alone, and inside shuffled batches of these sizes.
PROBE_ROWS = 16
PROBE_BATCH_SIZES = (2, 5, PROBE_ROWS)
PROBE_PERMUTATIONS = 3
# Why it matters and what usually causes it: part of every refusal of a model that mixes rows.
ROWS_MIX_ADVICE = (
    "outputs must not depend on other rows of the batch (the server batches different clients' requests "
    "together, so one client's answer would depend on another's data). The usual cause is BatchNorm or Dropout "
    "left in training mode: call model.eval() before export_bundle (BatchNorm(track_running_stats=False), or a "
    "forward that forces training mode, still uses batch statistics), or use layers without batch statistics "
    "(LayerNorm, GroupNorm) and no reduction over the batch axis (x.mean(0), a count over the batch)"
)


class ModelError(Exception):
    """The user's model cannot be served as it is; the message says what to change."""


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


class FlatEncoder(nn.Module):
    """x [batch, D] -> the user's encoder on x [batch, *input_shape] -> (z_mean, z_logvar) [batch, L]."""

    def __init__(self, encoder: nn.Module, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_shape = tuple(int(size) for size in input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = _as_tuple(self.encoder(x.reshape(-1, *self.input_shape)))
        return mean.flatten(1), logvar.flatten(1)


class FlatDecoder(nn.Module):
    """z [batch, L] -> the user's decoder -> the likelihood's parameters, each [batch, D].

    Bernoulli: the decoder returns logits shaped like the input. Gaussian: it returns (mean,
    log_scale); log_scale may be anything that broadcasts against the mean (one shared value, one
    per feature, or one per row and feature), so a learned scale is just a parameter it returns.
    """

    def __init__(self, decoder: nn.Module, likelihood: str, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood
        self.output_names = DECODER_OUTPUTS[likelihood]
        self.num_features = math.prod(int(size) for size in input_shape)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = _as_tuple(self.decoder(z))
        if self.likelihood == "bernoulli":
            return (outputs[0].reshape(-1, self.num_features),)
        mean, log_scale = outputs
        mean = mean.reshape(-1, self.num_features)
        # Broadcast a shared or per-feature scale to [batch, D] inside the graph: the served
        # likelihood reads one scale per row and feature.
        return mean, flat_log_scale(log_scale, self.num_features) + torch.zeros_like(mean)


class FlatPathway(nn.Module):
    """x [batch, D] -> the user's pathway on x [batch, *input_shape] -> each layer's activations [batch, H_l]."""

    def __init__(self, pathway: nn.Module, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.pathway = pathway
        self.input_shape = tuple(int(size) for size in input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer.flatten(1) for layer in _as_tuple(self.pathway(x.reshape(-1, *self.input_shape))))


@torch.no_grad()
def check_pathway(pathway: nn.Module, input_shape: tuple[int, ...], x_model: np.ndarray) -> None:
    """The pathway runs on a few rows (model space) and returns one or more finite tensors [batch, ...].

    Raises:
        ModelError: what it returned instead, and what it should return.
    """
    pathway.eval()
    batch = torch.from_numpy(x_model[:PROBE_ROWS]).reshape(-1, *input_shape)
    layers = _run(pathway, batch, "pathway")
    if not layers or not all(
        torch.is_tensor(value) and value.dim() >= 2 and len(value) == len(batch) for value in layers
    ):
        raise ModelError(
            "the pathway must return the encoder's hidden activations, one tensor [batch, ...] per layer; "
            f"for a batch of {len(batch)} it returned {len(layers)} values ({_describe(layers)})"
        )
    if _first_non_finite(list(layers), 0) is not None:
        raise ModelError("the pathway's activations are NaN or infinite on the calibration rows")


def flat_log_scale(log_scale: torch.Tensor, num_features: int) -> torch.Tensor:
    """A Gaussian decoder's log_scale with its feature axes flattened: [batch, D] for one per row
    and feature, unchanged when it is one shared value or one per feature (it then broadcasts)."""
    return log_scale.reshape(-1, num_features) if log_scale.dim() > 1 else log_scale


def _describe(outputs: tuple) -> str:
    return ", ".join(str(list(value.shape)) if torch.is_tensor(value) else type(value).__name__ for value in outputs)


def _check_encoder_outputs(outputs: tuple, rows: int) -> int:
    """The encoder returned (mean, logvar), each [rows, L]; returns L."""
    if len(outputs) != 2 or not all(torch.is_tensor(value) for value in outputs):
        raise ModelError(
            f"the encoder must return two tensors (z_mean, z_logvar); it returned {len(outputs)} values "
            f"({_describe(outputs)})"
        )
    mean, logvar = outputs
    if mean.dim() != 2 or mean.shape[0] != rows or mean.shape != logvar.shape:
        raise ModelError(
            f"the encoder's z_mean and z_logvar must both be [batch, latent]; for a batch of {rows} they are "
            f"{list(mean.shape)} and {list(logvar.shape)}"
        )
    return int(mean.shape[1])


def _check_decoder_outputs(outputs: tuple, likelihood: str, rows: int, input_shape: tuple[int, ...]) -> None:
    wanted = len(DECODER_OUTPUTS[likelihood])
    names = " and ".join(DECODER_OUTPUTS[likelihood])
    if len(outputs) != wanted or not all(torch.is_tensor(value) for value in outputs):
        raise ModelError(
            f"a {likelihood} decoder must return {names}; it returned {len(outputs)} values ({_describe(outputs)})"
        )
    main = outputs[0]
    allowed = ([rows, *input_shape], [rows, math.prod(input_shape)])
    if list(main.shape) not in allowed:
        raise ModelError(
            f"the decoder's {DECODER_OUTPUTS[likelihood][0]} must be [batch, *input_shape] = {allowed[0]} "
            f"(or flat {allowed[1]}); for a batch of {rows} it is {list(main.shape)}"
        )
    if likelihood == "gaussian":
        features = math.prod(input_shape)
        log_scale = outputs[1]
        try:
            torch.broadcast_shapes(flat_log_scale(log_scale, features).shape, (rows, features))
        except RuntimeError:
            raise ModelError(
                f"the decoder's log_scale {list(log_scale.shape)} does not broadcast against the mean "
                f"{list(main.shape)}: return one value, one per feature, or one per row and feature"
            ) from None


def _run(module: nn.Module, value: torch.Tensor, role: str) -> tuple:
    try:
        return _as_tuple(module(value))
    except Exception as error:  # the user's module: any error is theirs to fix, and we say where
        raise ModelError(
            f"the {role} failed on input of shape {list(value.shape)}: {type(error).__name__}: {error}"
        ) from None


def _first_non_finite(values: list[torch.Tensor], offset: int) -> int | None:
    for value in values:
        bad = (~torch.isfinite(value.reshape(len(value), -1))).any(dim=1).nonzero()
        if len(bad):
            return offset + int(bad[0])
    return None


@torch.no_grad()
def check_model(
    encoder: nn.Module, decoder: nn.Module, likelihood: str, input_shape: tuple[int, ...], x_model: np.ndarray
) -> int:
    """Run the user's modules on every row of ``x_model`` (in the model's space) and check them.

    Checks: the encoder returns (z_mean, z_logvar), each [batch, L]; the decoder takes those
    latents and returns the likelihood's parameters in the input's shape; every output is finite;
    each row's outputs do not depend on the other rows of its batch (``check_rows_independent``).

    Returns:
        The latent size L.

    Raises:
        ModelError: which check failed, on which shape or row, and what to change.
    """
    encoder.eval()
    decoder.eval()
    latent_dim = None
    for start in range(0, len(x_model), CHECK_BATCH_ROWS):
        batch = torch.from_numpy(x_model[start : start + CHECK_BATCH_ROWS]).reshape(-1, *input_shape)
        encoded = _run(encoder, batch, "encoder")
        latent_dim = _check_encoder_outputs(encoded, len(batch))
        bad = _first_non_finite(list(encoded), start)
        if bad is not None:
            raise ModelError(f"the encoder's output is NaN or infinite on calibration row {bad}")
        try:
            decoded = _as_tuple(decoder(encoded[0]))
        except Exception as error:  # the user's module; the usual cause is named first
            raise ModelError(
                f"the decoder failed on the encoder's latents [batch, {latent_dim}]: {type(error).__name__}: {error}. "
                "Do the encoder's latent size and the decoder's input size agree?"
            ) from None
        _check_decoder_outputs(decoded, likelihood, len(batch), input_shape)
        bad = _first_non_finite(list(decoded), start)
        if bad is not None:
            raise ModelError(f"the decoder's output is NaN or infinite on calibration row {bad} (decoded at z_mean)")
    check_rows_independent(FlatEncoder(encoder, input_shape), FlatDecoder(decoder, likelihood, input_shape), x_model)
    return latent_dim


def _outputs_by_row(module: nn.Module, inputs: torch.Tensor, order: np.ndarray, size: int, role: str) -> list:
    """``module``'s outputs for ``inputs``, run in batches of ``size`` rows taken in ``order``, put back
    into the rows' own order (one [rows, ...] tensor per output)."""
    results: list | None = None
    for start in range(0, len(order), size):
        rows = torch.from_numpy(order[start : start + size])
        outputs = _run(module, inputs[rows], role)
        if results is None:
            results = [torch.empty((len(inputs), *value.shape[1:]), dtype=value.dtype) for value in outputs]
        for result, value in zip(results, outputs, strict=True):
            result[rows] = value
    return results


def _first_mixed_row(alone: list, batched: list, names: tuple[str, ...]) -> tuple[str, int, float] | None:
    """The output, row and gap where ``batched`` differs from ``alone`` beyond the export tolerance."""
    for name, want, got in zip(names, alone, batched, strict=True):
        gap = (got - want).abs().reshape(len(want), -1)
        excess = gap / (PARITY_TOLERANCE * want.abs().reshape(len(want), -1).clamp(min=1.0))
        if not bool((excess <= 1.0).all()):  # NaN counts as a difference
            row = int(torch.nan_to_num(excess, nan=float("inf")).amax(dim=1).argmax())
            return name, row, float(gap[row].max())
    return None


def _check_deterministic(
    module: nn.Module, inputs: torch.Tensor, names: tuple[str, ...], role: str, first: list, size: int
) -> None:
    """The same rows, run the same way twice, give the same outputs: else a batch difference is only noise."""
    again = _first_mixed_row(first, _outputs_by_row(module, inputs, np.arange(len(inputs)), size, role), names)
    if again is not None:
        name, row, gap = again
        raise ModelError(
            f"the {role}'s output {name} for calibration row {row} differs by {gap:.3g} between two runs on the same "
            "input: outputs must be deterministic. Remove random draws from forward() (torch.rand*, sampling, "
            "Dropout in training mode: call model.eval()); the server draws its own noise"
        )


def _check_module_rows(module: nn.Module, inputs: torch.Tensor, names: tuple[str, ...], role: str) -> None:
    """Each row of ``inputs`` alone, then inside shuffled batches of several sizes: the same outputs.

    A module that fails on one row alone (BatchNorm with batch statistics does) is compared with
    its outputs for the rows in order instead; if those agree, its failure on one row is the refusal.
    """
    rows = len(inputs)
    try:
        reference, compared_with, alone_error = _outputs_by_row(module, inputs, np.arange(rows), 1, role), "alone", None
    except ModelError as error:
        reference = _outputs_by_row(module, inputs, np.arange(rows), rows, role)
        compared_with, alone_error = f"in order in a batch of {rows}", error
    _check_deterministic(module, inputs, names, role, reference, 1 if alone_error is None else rows)
    generator = np.random.default_rng(0)
    for _ in range(PROBE_PERMUTATIONS):
        order = generator.permutation(rows)
        for size in sorted({min(size, rows) for size in PROBE_BATCH_SIZES}):
            mixed = _first_mixed_row(reference, _outputs_by_row(module, inputs, order, size, role), names)
            if mixed is not None:
                name, row, gap = mixed
                raise ModelError(
                    f"the {role}'s output {name} for calibration row {row} changes by {gap:.3g} when it is batched "
                    f"with other rows ({compared_with} vs in a shuffled batch of {size}; tolerance "
                    f"{PARITY_TOLERANCE:g} x max(1, |value|)): {ROWS_MIX_ADVICE}"
                )
    if alone_error is not None:
        raise ModelError(f"{alone_error}; the server runs single rows too, so it must run on one row alone") from None


@torch.no_grad()
def check_rows_independent(encoder: FlatEncoder, decoder: FlatDecoder, x_model: np.ndarray) -> None:
    """Every row's outputs are the same alone and inside shuffled batches, for both graphs' modules.

    Probes the first ``PROBE_ROWS`` calibration rows: each alone, then in ``PROBE_PERMUTATIONS``
    shuffles cut into batches of each ``PROBE_BATCH_SIZES``; the decoder on their z_mean. Within the
    export parity tolerance, as ONNX Runtime must match torch.

    Raises:
        ModelError: which module, output and row differ, by how much, the likely cause and the fix.
    """
    x = torch.from_numpy(np.ascontiguousarray(x_model[:PROBE_ROWS], dtype=np.float32))
    _check_module_rows(encoder, x, ENCODER_OUTPUTS, "encoder")
    z = torch.cat([_run(encoder, x[row : row + 1], "encoder")[0] for row in range(len(x))])
    _check_module_rows(decoder, z, decoder.output_names, "decoder")
