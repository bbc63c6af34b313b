"""``vae-train export-triton``: a bundle's graphs as a Triton Inference Server model repository.

    REPO/<name>-encoder/config.pbtxt     REPO/<name>-encoder/<version>/model.onnx, manifest.json
    REPO/<name>-decoder/...              REPO/<name>-bounds/...   (when the bundle has bounds.onnx)
    REPO/<name>-pathway/...              (when the bundle has pathway.onnx)

The bundle is verified first, as the server does; the graphs are copied byte for byte, and the
bundle's sealed manifest beside each (Triton reads only model.onnx, and it says where the graph came
from). Each config.pbtxt is written here, field by field, from the graphs' own inputs and outputs
as ONNX Runtime reads them (names, element types, shapes), in protobuf text format: Triton's
``ModelConfig`` is not in this project's protobuf, so tests/test_triton_export.py parses every file
with Triton's own ``model_config_pb2`` (from tritonclient, in its own venv). Needs no torch, no onnx.

The encoder, the decoder and the pathway graph batch along axis 0, so Triton's dynamic batcher joins requests into one
graph run. The bounds graph cannot be batched by Triton: its rows are axis 0 of x but axis 1 of the
noise eps [k, n, L], and Triton joins every input along axis 0 (see ``bundle_models``).
"""

import os
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from vae_serve.core.bundle import Bundle, load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, NAME_PATTERN, file_sha256, integer_version
from vae_serve.export.bundle.triton_targets import MODEL_FILE, WRITTEN_BY, check_targets
from vae_serve.export.bundle.writer import PublishError, replace_dir, staging_dir_for

# Defaults that match vae-serve's own: --max-rows (most rows in one request) and --max-batch-wait (2 ms).
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_QUEUE_DELAY_US = 2000
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# ONNX Runtime's element types -> Triton's DataType; the bundle's graphs use only these two.
DATA_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(double)": "TYPE_FP64"}


class TritonExportError(ValueError):
    """The bundle or the flags cannot make a Triton repository (a version that is not an integer, ...)."""


@dataclass(frozen=True)
class Enum:
    """A protobuf enum value, written bare (TYPE_FP32), where a string is written quoted."""

    name: str


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # -1: a dynamic axis; without the batch axis when Triton batches


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository: a graph of the bundle and how Triton is to run it."""

    name: str
    source: str  # the graph's file in the bundle
    comment: str
    batched: bool  # Triton batches along axis 0 of every input (max_batch_size > 0)
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]


def graph_tensors(nodes: list[ort.NodeArg], batched: bool, where: str) -> tuple[TritonTensor, ...]:
    """Triton's view of a graph's inputs or outputs, read from ONNX Runtime's NodeArgs.

    Raises:
        TritonExportError: an element type Triton's config is not written for here, or (``batched``)
            a tensor whose axis 0 is not dynamic.
    """
    tensors = []
    for node in nodes:
        if node.type not in DATA_TYPES:
            raise TritonExportError(f"{where}: {node.name} is {node.type}; only {sorted(DATA_TYPES)} are exported")
        dims = tuple(size if isinstance(size, int) else -1 for size in node.shape)
        if batched:
            if not dims or dims[0] != -1:
                raise TritonExportError(f"{where}: {node.name} {list(node.shape)} has no dynamic batch axis 0")
            dims = dims[1:]
        tensors.append(TritonTensor(node.name, DATA_TYPES[node.type], dims))
    return tuple(tensors)


def bundle_models(bundle: Bundle, prefix: str) -> list[TritonModel]:
    """The repository's models: encoder and decoder, and the bounds and pathway graphs when the bundle has them."""
    manifest, vae = bundle.manifest, bundle.vae
    features, latent = manifest.input.num_features, manifest.latent_dim
    space = (
        "x is in the model's space: the client applies the manifest's preprocessing, (x - loc) / scale "
        f"({manifest.preprocessing.description if manifest.preprocessing else 'none'}), which vae-serve "
        "applies itself."
    )
    decoded = ", ".join(node.name for node in vae.decoder.get_outputs())
    parts = [
        (
            "encoder",
            manifest.graphs["encoder"].file,
            vae.encoder,
            f"x [batch, {features}] -> z_mean, z_logvar [batch, {latent}]. {space}",
        ),
        (
            "decoder",
            manifest.graphs["decoder"].file,
            vae.decoder,
            f"z [batch, {latent}] -> {decoded} [batch, {features}], the likelihood's raw parameters.",
        ),
    ]
    if manifest.bounds_graph is not None:
        comment = (
            f"x [n, {features}] and the noise eps [k, n, {latent}] -> elbo, reconstruction, kl, iwae, "
            "iwae_standard_error [n] (float64). Not batched by Triton (max_batch_size 0, full dims, -1 for "
            "the dynamic axes): the rows are axis 0 of x but axis 1 of eps, and Triton joins requests along "
            "axis 0 of every input, which would stack eps along k. The client draws eps: numpy "
            "default_rng([seed, 0]).standard_normal((k, n, L), float32) (vae.proto) gives vae-serve's "
            f"replies. {space}"
        )
        parts.append(("bounds", manifest.bounds_graph.graph.file, vae.bounds, comment))
    if manifest.pathway_graph is not None:
        comment = (
            f"x [batch, {features}] -> pathway_distance [batch] (float64): the pathway score before "
            f"calibration (its quantiles are in the manifest's calibration section). {space}"
        )
        parts.append(("pathway", manifest.pathway_graph.graph.file, vae.pathway, comment))
    return [
        TritonModel(
            name=f"{prefix}-{part}",
            source=file,
            comment=comment,
            batched=part != "bounds",
            inputs=graph_tensors(session.get_inputs(), part != "bounds", file),
            outputs=graph_tensors(session.get_outputs(), part != "bounds", file),
        )
        for part, file, session, comment in parts
    ]


def _quoted(text: str) -> str:
    if not re.fullmatch(r"[ -~]*", text):
        raise TritonExportError(f"{text!r}: only printable ASCII is written into config.pbtxt")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_format(fields: dict, indent: int = 0) -> list[str]:
    """Protobuf text format of ``fields``, in their order: str (quoted), int, ``Enum``, list[int]
    (a repeated number), dict (a message), list[dict] (repeated messages)."""
    pad, lines = "  " * indent, []
    for key, value in fields.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *text_format(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            lines.append(f"{pad}{key} [")
            for position, message in enumerate(value):
                closing = "}," if position < len(value) - 1 else "}"
                lines += [f"{pad}  {{", *text_format(message, indent + 2), f"{pad}  {closing}"]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(str(int(item)) for item in value)} ]")
        elif isinstance(value, Enum):
            lines.append(f"{pad}{key}: {value.name}")
        elif isinstance(value, str):
            lines.append(f"{pad}{key}: {_quoted(value)}")
        else:
            lines.append(f"{pad}{key}: {int(value)}")
    return lines


@dataclass(frozen=True)
class Serving:
    """How Triton runs every model: the flags of ``vae-train export-triton``."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    kind: str = "gpu"
    instances: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS or min(self.max_batch_size, self.instances) < 1 or self.max_queue_delay_us < 0:
            raise TritonExportError(f"settings out of range: {self}")


def config_text(model: TritonModel, serving: Serving, origin: str) -> str:
    """config.pbtxt of one model: comments that say what it is, then its ``ModelConfig``."""

    def tensors(specs: tuple[TritonTensor, ...]) -> list[dict]:
        return [tensor(spec) for spec in specs]

    def tensor(spec: TritonTensor) -> dict:
        entry = {"name": spec.name, "data_type": Enum(spec.data_type), "dims": list(spec.dims)}
        if model.batched and not spec.dims:
            # One value per row ([batch]): Triton needs a dim, so [1] in the config, reshaped to none in the graph.
            entry.update(dims=[1], reshape={"shape": []})
        return entry

    fields: dict = {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": serving.max_batch_size if model.batched else 0,
        "input": tensors(model.inputs),
        "output": tensors(model.outputs),
    }
    if model.batched:
        fields["dynamic_batching"] = {"max_queue_delay_microseconds": serving.max_queue_delay_us}
    fields["instance_group"] = [{"count": serving.instances, "kind": Enum(KINDS[serving.kind])}]
    comment = [f"# {line}" for line in textwrap.wrap(f"{model.name}: {origin}. {model.comment}", 96)]
    return "\n".join([*comment, *text_format(fields)]) + "\n"


def triton_version(bundle_version: str, requested: int | None) -> int:
    """Triton's version directory: ``requested``, else the bundle's version, which must be an integer."""
    if requested is not None:
        if requested < 1:
            raise TritonExportError(f"--version {requested}: Triton's versions are integers from 1")
        return requested
    if (number := integer_version(bundle_version)) is not None and number > 0:
        return number
    raise TritonExportError(
        f"the bundle's version {bundle_version!r} is not a positive integer, and Triton's version directories "
        "must be: give the Triton version with --version N"
    )


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def export_triton(
    bundle_dir: str | Path,
    out: str | Path,
    serving: Serving = Serving(),
    *,
    name: str | None = None,
    version: int | None = None,
    force: bool = False,
) -> dict:
    """Write a verified bundle's graphs into the Triton model repository ``out``.

    Args:
        bundle_dir: the bundle (verified first, as vae-serve verifies it).
        out: the repository; created if missing, other models in it are left alone.
        serving: batch size, queue delay, instance kind and count of every model.
        name: the models' prefix (default: the manifest's name): ``<name>-encoder`` and so on.
        version: Triton's version directory (default: the bundle's version, if an integer).
        force: replace versions that exist already: only directories this command wrote (model.onnx
            and manifest.json, nothing else) or empty ones.

    Returns:
        The summary JSON object: where, which models, which version.

    Raises:
        BundleError: the bundle does not verify (or a graph changed while it was copied).
        TritonExportError: a version or name Triton cannot take, or graphs it is not written for.
        PublishError: a version directory exists and ``force`` is false, or holds anything else
            than what this command writes; a config.pbtxt it did not write is in the way; or the
            repository cannot be written.
    """
    bundle_dir, out = Path(bundle_dir), Path(out)
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    prefix = name or manifest.name
    if not re.fullmatch(NAME_PATTERN, prefix):
        raise TritonExportError(f"name {prefix!r}: use letters, digits and _.- (a letter or digit first)")
    number = triton_version(manifest.version, version)
    models = bundle_models(bundle, prefix)
    targets = [out / model.name / str(number) for model in models]
    if (existing := [str(target) for target in targets if target.exists()]) and not force:
        raise PublishError(f"{', '.join(existing)} already exist; pass --force to replace them")
    check_targets(targets)
    origin = (
        f"from the vae-serve bundle {manifest.name}:{manifest.version} (manifest_sha256 "
        f"{manifest.manifest_sha256[:16]}...), {WRITTEN_BY} as version {number}"
    )
    for model, target in zip(models, targets, strict=True):
        # The version is staged beside its place and renamed in: a polling Triton never sees half a
        # version directory. (config.pbtxt, one per model for all its versions, is replaced on its own.)
        staging = staging_dir_for(target)
        shutil.copyfile(bundle_dir / model.source, staging / MODEL_FILE)
        shutil.copyfile(bundle_dir / MANIFEST_FILE, staging / MANIFEST_FILE)
        if file_sha256(staging / MODEL_FILE) != manifest.files[model.source].sha256:  # changed since verified
            shutil.rmtree(staging)
            raise BundleError(f"{bundle_dir / model.source}: changed while it was exported")
        try:
            check_targets([target])  # again: the repository may have changed since
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _write_atomically(target.parent / "config.pbtxt", config_text(model, serving, origin))
    return {
        "repository": str(out),
        "bundle": str(bundle_dir),
        "name": manifest.name,
        "version": manifest.version,
        "triton_version": number,
        "models": [model.name for model in models],
        "bounds_graph": manifest.bounds_graph is not None,
        "pathway_graph": manifest.pathway_graph is not None,
        "kind": KINDS[serving.kind],
    }
