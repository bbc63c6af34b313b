"""Read and verify a model bundle: manifest schema and self-checksum, file checksums, graph
signatures, rows independent of their batch, and golden outputs. A bundle that fails any check is
refused with a ``BundleError`` that says which file and what differs. Imports no torch.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, READABLE_FORMATS, Manifest, file_sha256, manifest_digest
from vae_serve.core.preprocessing import Affine
from vae_serve.core.row_independence import check_graph_rows
from vae_serve.core.runtime import (
    BOUNDS_INPUTS,
    BOUNDS_OUTPUTS,
    DEFAULT_PROVIDERS,
    PATHWAY_INPUT,
    PATHWAY_OUTPUT,
    OnnxVae,
    make_session,
    reconstruction_error_weights,
)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, ready to serve.

    ``manifest.name`` and ``manifest.version`` are the identity it is served under: the manifest's
    own, or a model repository's directories (``served_as``). Everything keyed on a model version
    (replies, metric labels, batchers, hot reload) reads them there.
    """

    path: Path
    manifest: Manifest
    vae: OnnxVae
    # (name, version) as manifest.json says, when the bundle is served under another identity.
    sealed_as: tuple[str, str] | None = None

    def served_as(self, name: str, version: str) -> "Bundle":
        """This bundle under the name and version a model repository's layout gives it.

        Neither the manifest file nor its seal is touched: the copy returned carries the new name
        and version in memory only (its ``manifest_sha256`` still describes the file), and the
        file's own in ``sealed_as``.

        Args:
            name, version: the identity to serve it under (``NAME_PATTERN``; the caller checks).

        Returns:
            ``self`` when they are the manifest's already, else a copy.
        """
        if (name, version) == (self.manifest.name, self.manifest.version):
            return self
        # model_copy does not validate; the caller has checked name and version against NAME_PATTERN.
        manifest = self.manifest.model_copy(update={"name": name, "version": version})
        sealed = self.sealed_as or (self.manifest.name, self.manifest.version)
        return replace(self, manifest=manifest, sealed_as=sealed)


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse ``manifest.json`` and check its schema and self-checksum."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path}: missing; a bundle directory must contain {MANIFEST_FILE}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise BundleError(f"{path}: top level must be a JSON object")
    if document.get("format_version") not in READABLE_FORMATS:
        raise BundleError(
            f"{path}: format_version {document.get('format_version')!r} is not supported "
            f"(this reader understands {', '.join(map(str, READABLE_FORMATS))})"
        )
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as error:
        raise BundleError(f"{path}: does not match the manifest schema: {error}") from None
    expected = manifest_digest(document)
    if manifest.manifest_sha256 != expected:
        raise BundleError(
            f"{path}: content does not match its manifest_sha256 "
            f"(recorded {manifest.manifest_sha256[:12]}..., computed {expected[:12]}...)"
        )
    return manifest


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every graph is listed in ``files``, and every listed file exists with its size and sha256."""
    for file in manifest.graph_files():
        if file not in manifest.files:
            raise BundleError(f"{MANIFEST_FILE}: the graph {file} has no checksum entry")
    for name, entry in manifest.files.items():
        path = Path(bundle_dir) / name
        if Path(name).name != name or name.startswith("."):
            raise BundleError(f"{MANIFEST_FILE}: file name {name!r} is not a plain file name")
        if not path.is_file():
            raise BundleError(f"{path}: missing (listed in {MANIFEST_FILE})")
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise BundleError(f"{path}: {size} bytes, manifest says {entry.size_bytes}")
        digest = file_sha256(path)
        if digest != entry.sha256:
            raise BundleError(f"{path}: sha256 {digest[:12]}... does not match the manifest's {entry.sha256[:12]}...")


def _check_signature(session: ort.InferenceSession, file: str, manifest_graph) -> None:
    """The graph's input and output names are those the manifest declares."""
    actual_inputs = [node.name for node in session.get_inputs()]
    actual_outputs = [node.name for node in session.get_outputs()]
    declared_inputs = [spec.name for spec in manifest_graph.inputs]
    declared_outputs = [spec.name for spec in manifest_graph.outputs]
    if actual_inputs != declared_inputs or sorted(actual_outputs) != sorted(declared_outputs):
        raise BundleError(
            f"{file}: graph takes {actual_inputs} and returns {actual_outputs}, manifest declares "
            f"{declared_inputs} -> {declared_outputs}"
        )


def _compare(file: str, name: str, actual: np.ndarray, expected: np.ndarray, golden) -> None:
    if actual.shape != expected.shape:
        raise BundleError(f"{file}: golden output {name!r} has shape {actual.shape}, expected {expected.shape}")
    excess = np.abs(actual - expected) - (golden.atol + golden.rtol * np.abs(expected))
    if not np.all(np.isfinite(actual)) or np.max(excess) > 0:
        worst = np.unravel_index(int(np.nanargmax(np.abs(actual - expected))), actual.shape)
        raise BundleError(
            f"{file}: golden output {name!r} differs from the manifest: at {tuple(map(int, worst))} "
            f"got {float(actual[worst]):.6g}, expected {float(expected[worst]):.6g} "
            f"(tolerance atol={golden.atol:g} + rtol={golden.rtol:g}*|expected|)"
        )


def verify_golden(vae: OnnxVae, manifest: Manifest) -> None:
    """Run each graph on its golden inputs and compare with the recorded outputs."""
    golden = manifest.golden
    for role, session, case in (("encoder", vae.encoder, golden.encoder), ("decoder", vae.decoder, golden.decoder)):
        file = manifest.graphs[role].file
        output_names = [node.name for node in session.get_outputs()]
        try:
            inputs = {name: np.asarray(value, dtype=np.float32) for name, value in case.inputs.items()}
            outputs = dict(zip(output_names, session.run(output_names, inputs), strict=True))
        except Exception as error:  # ORT's pybind errors share no base class below Exception
            raise BundleError(f"{file}: golden inputs could not be run ({error})") from None
        for name, expected in case.outputs.items():
            if name not in outputs:
                raise BundleError(f"{file}: golden output {name!r} is not produced by the graph")
            _compare(file, name, outputs[name], np.asarray(expected, dtype=np.float32), golden)


def verify_bounds_golden(session: ort.InferenceSession, bounds_graph) -> None:
    """Run the bounds graph on its golden inputs and compare with the numpy path's recorded outputs."""
    file = bounds_graph.graph.file
    try:
        inputs = {name: np.asarray(value, dtype=np.float32) for name, value in bounds_graph.inputs.items()}
        outputs = dict(zip(BOUNDS_OUTPUTS, session.run(list(BOUNDS_OUTPUTS), inputs), strict=True))
    except Exception as error:  # ORT's pybind errors share no base class below Exception
        raise BundleError(f"{file}: golden inputs could not be run ({error})") from None
    for name in BOUNDS_OUTPUTS:
        if name not in bounds_graph.outputs:
            raise BundleError(f"{MANIFEST_FILE}: the bounds graph's golden case has no {name!r}")
        tolerance = bounds_tolerance(bounds_graph, name)
        _compare(file, name, outputs[name], np.asarray(bounds_graph.outputs[name], dtype=np.float64), tolerance)


def verify_pathway_golden(session: ort.InferenceSession, pathway_graph) -> None:
    """Run the pathway graph on its golden rows and compare with torch's distances recorded at export."""
    file = pathway_graph.graph.file
    try:
        x = np.asarray(pathway_graph.inputs[PATHWAY_INPUT], dtype=np.float32)
        (actual,) = session.run([PATHWAY_OUTPUT], {PATHWAY_INPUT: x})
    except Exception as error:  # ORT's pybind errors share no base class below Exception; a missing key too
        raise BundleError(f"{file}: golden inputs could not be run ({error})") from None
    if PATHWAY_OUTPUT not in pathway_graph.outputs:
        raise BundleError(f"{MANIFEST_FILE}: the pathway graph's golden case has no {PATHWAY_OUTPUT!r}")
    _compare(file, PATHWAY_OUTPUT, actual, np.asarray(pathway_graph.outputs[PATHWAY_OUTPUT], np.float64), pathway_graph)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


def bounds_tolerance(bounds_graph, name: str) -> Tolerance:
    """How closely the bounds graph's output ``name`` must match the numpy path's."""
    if name == "iwae_standard_error":
        return Tolerance(bounds_graph.atol, bounds_graph.standard_error_rtol)
    return Tolerance(bounds_graph.atol, bounds_graph.rtol)


def verify_rows_independent(vae: OnnxVae, manifest: Manifest) -> None:
    """Each graph's outputs for a golden row are the same in the golden batch, reversed and alone.

    Raises:
        BundleError: a graph mixes rows (``core.row_independence``): it names the graph and the cause.
    """
    golden = manifest.golden

    def golden_tolerance(_: str) -> tuple[float, float]:
        return golden.atol, golden.rtol

    for role, session, case in (("encoder", vae.encoder, golden.encoder), ("decoder", vae.decoder, golden.decoder)):
        inputs = {name: np.asarray(value, dtype=np.float32) for name, value in case.inputs.items()}
        check_graph_rows(session, manifest.graphs[role].file, inputs, dict.fromkeys(inputs, 0), golden_tolerance)
    if vae.bounds is not None and manifest.bounds_graph is not None:
        bounds_graph = manifest.bounds_graph
        inputs = {name: np.asarray(value, dtype=np.float32) for name, value in bounds_graph.inputs.items()}
        row_axes = {BOUNDS_INPUTS[0]: 0, BOUNDS_INPUTS[1]: 1}  # x [n, D], eps [k, n, L]

        def tolerance(name: str) -> tuple[float, float]:
            limit = bounds_tolerance(bounds_graph, name)
            return limit.atol, limit.rtol

        check_graph_rows(vae.bounds, bounds_graph.graph.file, inputs, row_axes, tolerance)
    if vae.pathway is not None and manifest.pathway_graph is not None:
        pathway_graph = manifest.pathway_graph
        inputs = {PATHWAY_INPUT: np.asarray(pathway_graph.inputs[PATHWAY_INPUT], dtype=np.float32)}
        check_graph_rows(
            vae.pathway,
            pathway_graph.graph.file,
            inputs,
            {PATHWAY_INPUT: 0},
            lambda _: (pathway_graph.atol, pathway_graph.rtol),
        )


def error_weights(manifest: Manifest) -> np.ndarray | None:
    """The per-feature weights of the reconstruction errors its ``reconstruction_units`` ask for.

    Raises:
        BundleError: "standardized" units without a usable ``likelihood.parameters.feature_scale``.
    """
    try:
        return reconstruction_error_weights(
            manifest.reconstruction_units, manifest.likelihood.parameters, manifest.input.num_features
        )
    except ValueError as error:
        raise BundleError(f"{MANIFEST_FILE}: {error}") from None


def _open_graph(bundle_dir: Path, graph, providers: Sequence[str], intra_op_threads: int) -> ort.InferenceSession:
    path = bundle_dir / graph.file
    try:
        session = make_session(path, providers, intra_op_threads)
    except Exception as error:  # ORT raises several private exception types for bad models
        raise BundleError(f"{path}: ONNX Runtime cannot load it ({error})") from None
    _check_signature(session, graph.file, graph)
    return session


def load_bundle(
    bundle_dir: str | Path,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int = 0,
) -> Bundle:
    """Read, verify and open a bundle. Raises ``BundleError`` on the first problem found."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a directory")
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    sessions = {
        role: _open_graph(bundle_dir, graph, providers, intra_op_threads) for role, graph in manifest.graphs.items()
    }
    bounds = None
    if manifest.bounds_graph is not None:
        bounds = _open_graph(bundle_dir, manifest.bounds_graph.graph, providers, intra_op_threads)
    pathway = None
    if manifest.pathway_graph is not None:
        pathway = _open_graph(bundle_dir, manifest.pathway_graph.graph, providers, intra_op_threads)
    preprocessing = Affine.of(manifest.preprocessing)
    vae = OnnxVae(
        sessions["encoder"],
        sessions["decoder"],
        manifest.likelihood.name,
        preprocessing,
        bounds,
        error_weights=error_weights(manifest),
        pathway=pathway,
    )
    # First: a graph that mixes rows also fails its golden outputs, and this says why.
    verify_rows_independent(vae, manifest)
    if bounds is not None:
        verify_bounds_golden(bounds, manifest.bounds_graph)
    if pathway is not None:
        verify_pathway_golden(pathway, manifest.pathway_graph)
    verify_golden(vae, manifest)
    return Bundle(bundle_dir, manifest, vae)
