"""The torch-free loader: a good bundle round-trips, any damage is refused with a precise message."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, file_sha256, manifest_digest, seal
from vae_serve.core.scores import SCORES


def rewrite_manifest(bundle: Path, edit) -> None:
    """Apply ``edit`` to the manifest document and re-seal it, as a careless tool would."""
    path = bundle / MANIFEST_FILE
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(seal(document)))


def test_round_trip_fields_and_golden_outputs(digits_bundle):
    bundle = load_bundle(digits_bundle)
    manifest = bundle.manifest
    assert manifest.format_version == 2
    assert manifest.preprocessing.loc == [0.0] and manifest.preprocessing.scale == [16.0]
    assert (manifest.name, manifest.version) == ("digits", "1")
    assert manifest.input.shape == [8, 8] and manifest.input.num_features == 64
    assert manifest.likelihood.name == "bernoulli"
    for name, entry in manifest.files.items():
        assert file_sha256(digits_bundle / name) == entry.sha256
    assert manifest.manifest_sha256 == manifest_digest(json.loads((digits_bundle / MANIFEST_FILE).read_text()))
    # What the loader verified is reproducible here: the graphs give the recorded golden outputs.
    golden = manifest.golden
    z_mean, z_logvar = bundle.vae.encode(np.asarray(golden.encoder.inputs["x"], dtype=np.float32))
    np.testing.assert_allclose(z_mean, golden.encoder.outputs["z_mean"], atol=golden.atol, rtol=golden.rtol)
    np.testing.assert_allclose(z_logvar, golden.encoder.outputs["z_logvar"], atol=golden.atol, rtol=golden.rtol)
    logits = bundle.vae.decode(np.asarray(golden.decoder.inputs["z"], dtype=np.float32))["logits"]
    np.testing.assert_allclose(logits, golden.decoder.outputs["logits"], atol=golden.atol, rtol=golden.rtol)


def test_manifest_records_metrics_calibration_and_parity(digits_bundle):
    manifest = load_bundle(digits_bundle).manifest
    test = manifest.metrics.test
    assert test.iwae_k == 200 and test.num_examples == 359
    assert test.iwae_nll_nats <= -test.elbo_nats  # IWAE is the tighter bound
    assert test.bits_per_dim == pytest.approx(test.iwae_nll_nats / (64 * np.log(2)))
    assert "seed" in manifest.metrics.binarization
    assert set(manifest.calibration.scores) == set(SCORES)
    for score in manifest.calibration.scores.values():
        assert len(score.quantiles) == len(manifest.calibration.quantile_levels) == 1001
        assert np.all(np.diff(score.quantiles) >= 0)
    parity = manifest.export["parity_max_abs_diff"]
    assert max(max(graph.values()) for graph in parity.values()) <= manifest.export["parity_tolerance"]


def test_flipped_byte_is_refused_naming_the_file(bundle_copy):
    path = bundle_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256 .* does not match"):
        load_bundle(bundle_copy)


def test_truncated_file_is_refused(bundle_copy):
    path = bundle_copy / "encoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"encoder\.onnx: 1000 bytes, manifest says \d+"):
        load_bundle(bundle_copy)


def test_missing_graph_is_refused(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder\.onnx: missing"):
        load_bundle(bundle_copy)


def test_edited_manifest_is_refused_by_its_self_checksum(bundle_copy):
    path = bundle_copy / MANIFEST_FILE
    document = json.loads(path.read_text())
    document["metrics"]["test"]["iwae_nll_nats"] = 1.0
    path.write_text(json.dumps(document))
    with pytest.raises(BundleError, match="does not match its manifest_sha256"):
        load_bundle(bundle_copy)


def test_wrong_golden_output_is_refused(bundle_copy):
    def corrupt(document):
        document["golden"]["decoder"]["outputs"]["logits"][2][5] += 0.5

    rewrite_manifest(bundle_copy, corrupt)
    with pytest.raises(BundleError, match=r"decoder\.onnx: golden output 'logits' differs .* at \(2, 5\)"):
        load_bundle(bundle_copy)


def test_golden_tolerances_cannot_be_widened(bundle_copy):
    def widen(document):
        document["golden"]["atol"] = 1.0

    rewrite_manifest(bundle_copy, widen)
    with pytest.raises(BundleError, match=r"(?s)manifest schema.*golden\.atol.*less than or equal to 0\.001"):
        load_bundle(bundle_copy)


def test_a_different_model_with_matching_checksums_is_refused(bundle_copy, tmp_path, capsys):
    # Swap in the decoder of another training run and fix up every checksum: only the golden
    # outputs can tell that these graphs are not the model the manifest describes.
    from vae_serve.export import cli

    other = tmp_path / "other"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "digits",
                "--out",
                str(other),
                "--seed",
                "99",
                "--epochs",
                "2",
                "--iwae-k",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    shutil.copy(other / "decoder.onnx", bundle_copy / "decoder.onnx")

    def fix_checksum(document):
        document["files"]["decoder.onnx"] = {
            "sha256": file_sha256(bundle_copy / "decoder.onnx"),
            "size_bytes": (bundle_copy / "decoder.onnx").stat().st_size,
        }

    rewrite_manifest(bundle_copy, fix_checksum)
    with pytest.raises(BundleError, match=r"decoder\.onnx: golden output 'logits' differs"):
        load_bundle(bundle_copy)


def test_file_names_cannot_leave_the_bundle(bundle_copy):
    def escape(document):
        document["graphs"]["encoder"]["file"] = "../encoder.onnx"

    rewrite_manifest(bundle_copy, escape)
    with pytest.raises(BundleError, match="does not match the manifest schema"):
        load_bundle(bundle_copy)


def test_unsupported_format_version_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda document: document.update(format_version=3))
    with pytest.raises(BundleError, match=r"format_version 3 is not supported \(this reader understands 1, 2\)"):
        load_bundle(bundle_copy)


def test_a_format_1_bundle_still_loads_and_has_no_preprocessing(bundle_copy):
    def as_format_1(document):
        document["format_version"] = 1
        del document["preprocessing"]

    rewrite_manifest(bundle_copy, as_format_1)
    bundle = load_bundle(bundle_copy)
    assert bundle.manifest.preprocessing is None and bundle.vae.preprocessing is None
    rows = np.full((2, 64), 0.5, np.float32)
    assert bundle.vae.to_model(rows) is rows


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        ({"loc": [0.0], "scale": [0.0], "description": "x"}, "must be > 0"),
        ({"loc": [0.0, 1.0], "scale": [1.0], "description": "x"}, "need 1 or 64 values"),
    ],
)
def test_bad_preprocessing_is_refused(bundle_copy, preprocessing, message):
    rewrite_manifest(bundle_copy, lambda document: document.update(preprocessing=preprocessing))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def modules_of(*packages: str) -> list[str]:
    """The dotted name of every module under the source folders ``packages`` (core, service, ...),
    sub-packages included: ``service/plane/batching.py`` -> ``vae_serve.service.plane.batching``."""
    root = Path(__file__).resolve().parent.parent
    modules = set()
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules.add(".".join(("vae_serve", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return sorted(modules)


def test_module_names_reach_into_sub_packages():
    modules = modules_of("core", "service")
    assert {"vae_serve.core.runtime", "vae_serve.service", "vae_serve.service.plane.batching"} <= set(modules)
    assert {"vae_serve.service.observe.tracing", "vae_serve.service.grpc.servicer"} <= set(modules)


def test_serving_side_never_imports_torch(digits_bundle):
    # Every module of service/ and client/ (the serving image has no torch), then a real load.
    modules = modules_of("core", "service", "client")
    program = (
        "import importlib, sys\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
        "from vae_serve.core.bundle import load_bundle\n"
        f"bundle = load_bundle({str(digits_bundle)!r})\n"
        "assert bundle.manifest.name == 'digits'\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_core_imports_neither_torch_nor_grpc_nor_opentelemetry(digits_bundle):
    # vae_serve.core is what both the server and the exporter build on: numpy, onnxruntime and
    # pydantic only, no OpenTelemetry (the server hands its graph-run hook in). Every core module is
    # imported, a bundle loaded and scored.
    modules = modules_of("core")
    program = (
        "import importlib, sys\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
        "from vae_serve.core.bundle import load_bundle\n"
        "from vae_serve.core.scores import SCORES, anomaly_scores\n"
        f"bundle = load_bundle({str(digits_bundle)!r})\n"
        "x = bundle.manifest.golden.encoder.inputs['x']\n"
        "import numpy as np\n"
        "anomaly_scores(bundle.vae, np.asarray(x, np.float32), list(SCORES), 0, bundle.manifest.calibration.scores)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'grpc', 'google', 'opentelemetry'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_golden_inputs_of_the_wrong_width_are_refused(bundle_copy):
    def widen(document):
        document["golden"]["encoder"]["inputs"]["x"] = [
            [*row, 0.0] for row in document["golden"]["encoder"]["inputs"]["x"]
        ]

    rewrite_manifest(bundle_copy, widen)
    with pytest.raises(BundleError, match=r"encoder\.onnx: golden inputs could not be run"):
        load_bundle(bundle_copy)
