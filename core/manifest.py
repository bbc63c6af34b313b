"""The bundle manifest: its typed schema and its self-checksum. Format documented in docs/bundle.md."""

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_FILE = "manifest.json"
# The format this code writes. 2 added ``preprocessing`` (the server maps raw client values into
# the model's space); a reader of format 1 would silently skip that map, so the number changed.
# A format-1 bundle still loads: it has no preprocessing.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# A file name inside a bundle: no directories, no dot-files, so a manifest can never point outside.
SAFE_FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
SHA256_HEX = r"^[0-9a-f]{64}$"
# A model name or version: it becomes a directory name in a model repository.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A version directory that vae-train reads as a version: digits only (Triton's rule too).
INTEGER_VERSION = r"^[0-9]+$"


def integer_version(version: str) -> int | None:
    """The number of a version made of ASCII digits only (Triton's rule), else None."""
    return int(version) if re.fullmatch(INTEGER_VERSION, version) else None


def repository_layout(directory: str | Path) -> tuple[str, str] | None:
    """(NAME, N) when ``directory`` is a model repository's ``NAME/N`` with N an integer, else None.

    In a model repository the directories are the name and version a bundle is served as, whatever
    its manifest says (docs/bundle.md, "Versions in a model repository"); vae-train takes its default
    name and version from them so that the two agree.
    """
    directory = Path(directory).absolute()
    version, name = directory.name, directory.parent.name
    if integer_version(version) is not None and re.fullmatch(NAME_PATTERN, name):
        return name, version
    return None


class _Strict(BaseModel):
    # Unknown keys are kept rather than refused so that a newer writer's optional additions do not
    # break an older reader; the format version gates incompatible changes.
    model_config = ConfigDict(extra="allow", frozen=True)


class TensorSpec(_Strict):
    name: str
    shape: list[int | str] = Field(description="dimensions; a string names a dynamic axis")
    dtype: Literal["float32", "float64"]


class GraphSpec(_Strict):
    file: str = Field(pattern=SAFE_FILE_NAME)
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class InputSpec(_Strict):
    shape: list[int] = Field(description="one example's natural shape; graphs take it flattened")
    num_features: int = Field(gt=0)
    dtype: Literal["float32"]
    value_range: tuple[float | None, float | None]
    preprocessing: str


class Preprocessing(_Strict):
    """x_model = (x_raw - loc) / scale, applied by the server to every input row (``core.preprocessing``).

    ``loc`` and ``scale`` hold one value for every feature, or one per feature.
    """

    loc: list[float] = Field(min_length=1)
    scale: list[float] = Field(min_length=1)
    description: str

    @field_validator("loc", "scale")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(value) for value in values):
            raise ValueError("must be finite")
        return values

    @field_validator("scale")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if not all(value > 0 for value in values):
            raise ValueError("must be > 0")
        return values


class LikelihoodSpec(_Strict):
    name: Literal["bernoulli", "gaussian"]
    parameters: dict[str, Any]


class SplitMetrics(_Strict):
    num_examples: int
    elbo_nats: float
    iwae_nll_nats: float
    iwae_k: int
    bits_per_dim: float = Field(description="iwae_nll_nats / (num_features * ln 2)")


class Metrics(_Strict):
    validation: SplitMetrics
    test: SplitMetrics | None = None  # None: the run kept no test rows
    binarization: str


class ScoreCalibration(_Strict):
    params: dict[str, Any]
    num_examples: int
    mean: float
    std: float
    quantiles: list[float]


class Calibration(_Strict):
    data: str
    seed: int
    quantile_levels: list[float]
    scores: dict[str, ScoreCalibration]


class GoldenCase(_Strict):
    inputs: dict[str, list[list[float]]]
    outputs: dict[str, list[list[float]]]


# Golden tolerances are read from the manifest, which anyone can edit and reseal: the loader caps
# them, so a resealed manifest cannot widen them until any graph passes.
MAX_GOLDEN_TOLERANCE = 1e-3


MAX_STANDARD_ERROR_TOLERANCE = 0.05


class Golden(_Strict):
    atol: float = Field(gt=0, le=MAX_GOLDEN_TOLERANCE)
    rtol: float = Field(ge=0, le=MAX_GOLDEN_TOLERANCE)
    encoder: GoldenCase
    decoder: GoldenCase


class BoundsGraph(_Strict):
    """The optional fused bounds graph (``bounds.onnx``): x [n, D] and the noise eps [k, n, L] in,
    every row's ELBO, its two terms, the IWAE bound and its standard error out (float64).

    Its golden case holds outputs computed by the numpy path (``core.bounds``) at export; the loader
    checks the graph against them, so the two computations agree within the tolerances every time
    the bundle loads. A bundle without it is served through the numpy path. Readers that predate it
    ignore the key (unknown keys are kept, not refused) and serve the same bundle through numpy.
    """

    graph: GraphSpec
    atol: float = Field(gt=0, le=MAX_GOLDEN_TOLERANCE)
    rtol: float = Field(ge=0, le=MAX_GOLDEN_TOLERANCE)
    # The IWAE standard error is a ratio of the draws' weights, exp(log w - max): float32 rounding
    # of a large log p(x|z) moves it by more, relative, than the bounds themselves (~1e-3 measured).
    standard_error_rtol: float = Field(gt=0, le=MAX_STANDARD_ERROR_TOLERANCE)
    inputs: dict[str, list] = Field(description="x [n, D] and eps [k, n, L], nested lists")
    outputs: dict[str, list[float]] = Field(description="per output name, one value per row")


class PathwayLayer(_Strict):
    """One hidden layer of the pathway score: its width and the principal directions kept."""

    features: int = Field(gt=0)
    rank: int = Field(ge=0)


class PathwayGraph(_Strict):
    """The optional pathway graph (``pathway.onnx``): x [n, D] in, each row's RaPP normalized-pathway
    distance out (float64), the ``pathway`` score (export/bundle/pathway_graph.py says how).

    Its statistics were fitted on ``fit_rows`` rows that are not the calibration rows; its golden
    case holds torch's outputs at export, which the loader checks the graph against. A bundle without
    it (a user's own model, or one written before it) has no ``pathway`` score; every other score is served.
    """

    graph: GraphSpec
    fit_rows: int = Field(ge=2)
    fit_rows_description: str
    layers: list[PathwayLayer] = Field(min_length=1)
    atol: float = Field(gt=0, le=MAX_GOLDEN_TOLERANCE)
    rtol: float = Field(ge=0, le=MAX_GOLDEN_TOLERANCE)
    inputs: dict[str, list] = Field(description="x [n, D], nested lists")
    outputs: dict[str, list[float]] = Field(description="pathway_distance, one value per row")


class LatentDirection(_Strict):
    """One principal direction of the posterior means: a unit vector in the latent space [L] (its sign
    fixed so that its largest-magnitude component is positive) and the means' spread along it."""

    unit: list[float] = Field(min_length=1)
    sd: float = Field(ge=0, description="standard deviation of the centred means projected on unit (ddof 1)")
    variance_fraction: float = Field(ge=0, le=1, description="its share of the means' total variance")


class LatentMap(_Strict):
    """The principal plane of the posterior means E[z|x] of rows the exporter encoded: ``mean`` [L] and
    the top two ``directions`` (one when L is 1), from numpy's SVD of the centred means
    (``core.manifold.latent_map_of``). The manifold map (``vae-client manifold``) decodes a grid on it.
    """

    rows: str = Field(description="which rows were encoded, e.g. the calibration rows")
    num_rows: int = Field(ge=2)
    mean: list[float] = Field(min_length=1)
    directions: list[LatentDirection] = Field(min_length=1, max_length=2)


class FileEntry(_Strict):
    sha256: str = Field(pattern=SHA256_HEX)
    size_bytes: int = Field(ge=0)


class ManifestBody(_Strict):
    """What a writer describes: everything but the checksums that seal it (``Manifest``)."""

    format_version: Literal[1, 2]  # READABLE_FORMATS (a Literal needs the values themselves)
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)
    created_at: str
    producer: dict[str, str]
    input: InputSpec
    preprocessing: Preprocessing | None = None  # format 2; None (format 1) is the identity
    latent_dim: int = Field(gt=0)
    likelihood: LikelihoodSpec
    graphs: dict[Literal["encoder", "decoder"], GraphSpec]
    training: dict[str, Any]
    metrics: Metrics
    export: dict[str, Any]
    calibration: Calibration
    golden: Golden
    bounds_graph: BoundsGraph | None = None
    pathway_graph: PathwayGraph | None = None
    # The score ScoreAnomaly uses when a request names none; None (older bundles): core.scores.DEFAULT_SCORE.
    default_score: str | None = None
    # "standardized": reconstruction errors are squared residuals / feature_scale**2 (the likelihood's
    # parameters hold feature_scale); "model": raw squared errors in the model's space, as before.
    reconstruction_units: Literal["model", "standardized"] = "model"
    # The principal plane of the calibration rows' posterior means; None: a bundle written before it.
    latent_map: LatentMap | None = None

    def document(self) -> dict[str, Any]:
        """The JSON document this manifest is written as (and sealed over). An optional section at its
        default (no bounds or pathway graph, no default score, errors in model units, no latent map) is
        written as before it existed: no key, rather than null, so older bundles are rewritten unchanged."""
        defaults = {
            "bounds_graph": None,
            "pathway_graph": None,
            "default_score": None,
            "reconstruction_units": "model",
            "latent_map": None,
        }
        exclude = {key for key, value in defaults.items() if getattr(self, key) == value}
        return self.model_dump(mode="json", exclude=exclude)

    def graph_files(self) -> list[str]:
        """Every graph file the manifest names."""
        files = [graph.file for graph in self.graphs.values()]
        optional = (self.bounds_graph, self.pathway_graph)
        return files + [extra.graph.file for extra in optional if extra is not None]

    @model_validator(mode="after")
    def _preprocessing_fits(self) -> "ManifestBody":
        spec, features = self.preprocessing, self.input.num_features
        if spec is not None and not {len(spec.loc), len(spec.scale)} <= {1, features}:
            raise ValueError(f"preprocessing loc and scale need 1 or {features} values each")
        return self

    @model_validator(mode="after")
    def _latent_map_fits(self) -> "ManifestBody":
        plane = self.latent_map
        if plane is None:
            return self
        sizes = {len(plane.mean), *(len(direction.unit) for direction in plane.directions)}
        if sizes != {self.latent_dim}:
            raise ValueError(f"latent_map: mean and each direction need latent_dim = {self.latent_dim} values")
        if len(plane.directions) != min(2, self.latent_dim):
            raise ValueError(f"latent_map: needs {min(2, self.latent_dim)} directions for latent_dim {self.latent_dim}")
        return self


class Manifest(ManifestBody):
    """A sealed manifest, as ``manifest.json`` holds it: the body, its files' checksums and its own."""

    files: dict[str, FileEntry]
    manifest_sha256: str = Field(pattern=SHA256_HEX)

    def body(self) -> ManifestBody:
        """This manifest without its seal, for a writer to amend; keys a newer writer added are kept."""
        return ManifestBody.model_validate(self.model_dump(exclude={"files", "manifest_sha256"}))


def manifest_digest(document: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, ``manifest_sha256`` itself left out.

    Canonical: keys sorted, no whitespace, floats in Python's shortest round-trip form.
    """
    body = {key: value for key, value in document.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal(document: dict[str, Any]) -> dict[str, Any]:
    """Return ``document`` with ``manifest_sha256`` set to its digest."""
    return {**document, "manifest_sha256": manifest_digest(document)}


def seal_manifest(body: ManifestBody, files: dict[str, FileEntry]) -> Manifest:
    """Seal a manifest body.

    The digest is taken over the body's JSON-mode dump with ``files`` added: the very document
    ``manifest.json`` holds, from which ``read_manifest`` recomputes it.

    Args:
        body: what the manifest describes (typically from the exporter, or ``Manifest.body()``).
        files: sha256 and size of every file of the bundle but manifest.json.

    Returns:
        The sealed, validated manifest; ``document()`` is what to write.

    Raises:
        pydantic.ValidationError: the result breaks the schema (a body from ``model_copy(update=...)``
            is not validated until here).
    """
    document = {
        **body.document(),
        "files": {name: entry.model_dump(mode="json") for name, entry in files.items()},
    }
    return Manifest.model_validate(seal(document))


def file_sha256(path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
