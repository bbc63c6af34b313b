"""The bundle's bounds graph (bounds.onnx): it agrees with the numpy path within the manifest's
tolerances, a request's bounds are bit-identical alone or batched, large requests are chunked, a
bundle without the graph still serves, and a graph that disagrees with its golden case is refused.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.server_process import start_server, tensor
from vae_serve.api.v1 import vae_pb2
from vae_serve.core import bounds as bounds_module
from vae_serve.core import vae_math
from vae_serve.core.bounds import bounds_from_noise, estimate_bounds_batch, latent_generator
from vae_serve.core.bundle import bounds_tolerance, load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.core.manifest import MANIFEST_FILE, file_sha256, seal
from vae_serve.core.runtime import BOUNDS_OUTPUTS, ENCODER_INPUT, ENCODER_OUTPUTS, OnnxVae, run_graph


def read_manifest_document(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_FILE).read_text())


def numpy_only(vae: OnnxVae) -> OnnxVae:
    """The same model served by the numpy path (no bounds graph)."""
    return OnnxVae(vae.encoder, vae.decoder, vae.likelihood, vae.preprocessing)


def without_bounds_graph(source: Path, target: Path) -> Path:
    """A copy of a bundle as exporters wrote it before the bounds graph: no file, no manifest key."""
    shutil.copytree(source, target)
    document = read_manifest_document(target)
    del document["bounds_graph"]
    del document["files"]["bounds.onnx"]
    (target / "bounds.onnx").unlink()
    (target / MANIFEST_FILE).write_text(json.dumps(seal(document), indent=2))
    return target


def assert_within_golden_tolerance(graph, numpy_bounds, manifest) -> None:
    for name in BOUNDS_OUTPUTS:
        tolerance = bounds_tolerance(manifest.bounds_graph, name)
        np.testing.assert_allclose(
            getattr(graph, name), getattr(numpy_bounds, name), rtol=tolerance.rtol, atol=tolerance.atol, err_msg=name
        )


@pytest.mark.parametrize("fixture", ["digits_bundle", "gaussian_bundle"])
def test_the_graph_agrees_with_the_numpy_path_within_the_manifest_tolerance(fixture, request):
    bundle = load_bundle(request.getfixturevalue(fixture), intra_op_threads=1)
    assert bundle.vae.bounds is not None and "bounds.onnx" in bundle.manifest.files
    features, latent = bundle.manifest.input.num_features, bundle.manifest.latent_dim
    rng = np.random.default_rng(5)
    for rows, k in [(1, 1), (7, 1), (3, 37), (64, 5), (2, 300)]:
        x = rng.random((rows, features), dtype=np.float32)  # rows in the model's space
        graph = estimate_bounds_batch(bundle.vae, [(x, k, latent_generator(rows))])[0]
        # The reference: the numpy path on the same noise, drawn as the protocol says.
        noise = latent_generator(rows).standard_normal((k, rows, latent), np.float32)
        assert_within_golden_tolerance(graph, bounds_from_noise(numpy_only(bundle.vae), x, noise), bundle.manifest)


def test_bounds_are_bit_identical_alone_or_batched_for_any_mix(digits_bundle):
    vae = load_bundle(digits_bundle, intra_op_threads=1).vae
    rng = np.random.default_rng(11)
    for _ in range(30):
        sizes = rng.integers(1, 5, size=int(rng.integers(2, 6)))
        ks = rng.choice([1, 3, 8, 31], size=len(sizes))
        xs = [rng.random((size, 64), dtype=np.float32) for size in sizes]

        def requests(xs=xs, ks=ks):
            return [(x, int(k), latent_generator(seed)) for seed, (x, k) in enumerate(zip(xs, ks, strict=True))]

        together = estimate_bounds_batch(vae, requests())
        alone = [estimate_bounds_batch(vae, [one])[0] for one in requests()]
        for joined, single in zip(together, alone, strict=True):
            for name in BOUNDS_OUTPUTS:
                assert np.array_equal(getattr(joined, name), getattr(single, name)), name


def test_a_large_request_is_chunked_with_the_same_bounds(digits_bundle, monkeypatch):
    bundle = load_bundle(digits_bundle, intra_op_threads=1)
    x = np.random.default_rng(2).random((50, 64), dtype=np.float32)
    whole = estimate_bounds_batch(bundle.vae, [(x, 4, latent_generator(9))])[0]
    monkeypatch.setattr(bounds_module, "MAX_GRAPH_VALUES", 4 * 64 * 7)  # 7 rows per graph run
    chunked = estimate_bounds_batch(bundle.vae, [(x, 4, latent_generator(9))])[0]
    assert_within_golden_tolerance(chunked, whole, bundle.manifest)


def test_a_bundle_without_the_graph_is_served_by_the_numpy_path(digits_bundle, tmp_path):
    old = without_bounds_graph(digits_bundle, tmp_path / "old")
    assert load_bundle(old).vae.bounds is None
    x = tensor(np.random.default_rng(4).random((6, 64), dtype=np.float32))
    request = vae_pb2.ElboRequest(x=x, k=20, seed=8)
    replies = []
    for bundle in (digits_bundle, old):
        server = start_server("--bundle", str(bundle), metrics=False)
        try:
            replies.append(server.stub.Elbo(request, timeout=30))
        finally:
            assert server.stop() == 0
    graph, numpy_reply = replies
    assert_within_golden_tolerance(graph, numpy_reply, load_bundle(digits_bundle).manifest)


def test_a_graph_that_disagrees_with_its_golden_case_is_refused(digits_bundle, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    document = read_manifest_document(bundle)
    document["bounds_graph"]["outputs"]["elbo"][0] += 0.01  # far beyond atol 1e-4 + rtol 1e-5 |elbo|
    (bundle / MANIFEST_FILE).write_text(json.dumps(seal(document), indent=2))
    with pytest.raises(BundleError, match=r"bounds\.onnx: golden output 'elbo' differs"):
        load_bundle(bundle)


def test_a_changed_bounds_graph_file_is_refused(digits_bundle, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    with (bundle / "bounds.onnx").open("ab") as stream:
        stream.write(b"\0")
    assert file_sha256(bundle / "bounds.onnx") != read_manifest_document(bundle)["files"]["bounds.onnx"]["sha256"]
    with pytest.raises(BundleError, match=r"bounds\.onnx: \d+ bytes, manifest says"):
        load_bundle(bundle)


@pytest.mark.parametrize("fixture", ["digits_bundle", "gaussian_bundle"])
def test_the_graph_boxes_the_posterior_as_the_numpy_path_does(fixture, request):
    # Rows far outside the data drive the encoder's raw posterior outside vae_math's box (means beyond
    # +-1e6, log-variances beyond 27.6, inputs beyond +-1e15): the graph must use the same boxed
    # proposal as the numpy path, so that both give the same bounds wherever the graph's are finite.
    bundle = load_bundle(request.getfixturevalue(fixture), intra_op_threads=1)
    features, latent = bundle.manifest.input.num_features, bundle.manifest.latent_dim
    rows = [np.full(features, value, np.float32) for value in (1e5, 1e7, -1e7, 1e9, 1e16, -1e16)]
    corner = np.zeros(features, np.float32)
    corner[0] = 1e10
    x = np.stack([*rows, corner])
    mean, logvar = run_graph(
        bundle.vae.encoder, "encoder", list(ENCODER_OUTPUTS), {ENCODER_INPUT: np.clip(x, -1e15, 1e15)}
    )
    outside = (np.abs(mean) > vae_math.LATENT_LIMIT).any(axis=1) | (logvar > vae_math.LOGVAR_MAX).any(axis=1)
    assert outside.any(), "no row reached the box: the test would show nothing"
    noise = latent_generator(9).standard_normal((5, len(x), latent), np.float32)
    graph = dict(zip(BOUNDS_OUTPUTS, bundle.vae.run_bounds(x, noise), strict=True))
    reference = bounds_from_noise(numpy_only(bundle.vae), x, noise)
    for name in ("elbo", "iwae"):
        finite = np.isfinite(graph[name])
        assert finite[outside].any(), f"{name}: the graph gave no finite value on a boxed row"
        tolerance = bounds_tolerance(bundle.manifest.bounds_graph, name)
        np.testing.assert_allclose(
            graph[name][finite],
            getattr(reference, name)[finite],
            rtol=tolerance.rtol,
            atol=tolerance.atol,
            err_msg=name,
        )
