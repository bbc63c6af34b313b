"""``vae-train export-triton``: a bundle's graphs as a Triton model repository whose config.pbtxt
files parse with Triton's own ``ModelConfig`` proto (from ``tritonclient``, run from its own venv)
and agree with the graphs as ONNX Runtime reads them; the graphs are the bundle's, byte for byte.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.server_process import tensor
from tests.test_bounds_graph import without_bounds_graph
from tests.test_server_lifecycle import copy_as_version
from tests.test_train_cli import TRAIN_EXTRA, vae_train_without
from tests.venv_probe import TRITONCLIENT_PYTHON, run_probe
from vae_serve.api.v1 import vae_pb2
from vae_serve.core.manifest import MANIFEST_FILE
from vae_serve.export import cli

ROOT = Path(__file__).resolve().parents[1]
TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(double)": "TYPE_FP64"}
GRAPHS = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "bounds": "bounds.onnx", "pathway": "pathway.onnx"}


def export_triton(capsys, *args: str) -> tuple[int, dict | None, str]:
    """Run vae-train export-triton in-process: exit code, its JSON summary (or None), stderr."""
    code = cli.main(["export-triton", *args])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else None, captured.err


def parse_configs(*paths: Path) -> dict[str, dict]:
    """Each file parsed into Triton's ModelConfig by tests/tritonclient_config_probe.py."""
    result = run_probe(TRITONCLIENT_PYTHON, "tritonclient", "tritonclient_config_probe.py", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def graph_tensors(nodes, batched: bool) -> list[dict]:
    """What the config must say of a graph's inputs or outputs, from ONNX Runtime's own reading."""
    specs = []
    for node in nodes:
        dims = [size if isinstance(size, int) else -1 for size in node.shape]
        # A batched [batch] tensor is [1] to Triton, reshaped to [] for the graph (Triton needs a dim).
        dims = (dims[1:] or [1]) if batched else dims
        specs.append({"name": node.name, "data_type": TRITON_TYPES[node.type], "dims": dims})
    return specs


def test_every_graph_is_exported_with_a_config_tritons_proto_parses(digits_bundle, gaussian_bundle, tmp_path, capsys):
    repository = tmp_path / "triton"
    code, digits, err = export_triton(capsys, "--bundle", str(digits_bundle), "--out", str(repository))
    assert code == 0, err
    assert digits["models"] == ["digits-encoder", "digits-decoder", "digits-bounds", "digits-pathway"]
    assert digits["triton_version"] == 1 and digits["pathway_graph"] is True
    args = ["--kind", "cpu", "--instances", "2", "--max-batch-size", "64", "--max-queue-delay-us", "500"]
    code, records, err = export_triton(capsys, "--bundle", str(gaussian_bundle), "--out", str(repository), *args)
    assert code == 0, err
    assert records["models"] == ["records-encoder", "records-decoder", "records-bounds", "records-pathway"]

    exported = {
        (bundle, part): repository / f"{name}-{part}"
        for bundle, name in [(digits_bundle, "digits"), (gaussian_bundle, "records")]
        for part in GRAPHS
    }
    for (bundle, part), model in exported.items():
        # The graphs and the sealed manifest are the bundle's, byte for byte.
        assert (model / "1" / "model.onnx").read_bytes() == (bundle / GRAPHS[part]).read_bytes()
        assert (model / "1" / MANIFEST_FILE).read_bytes() == (bundle / MANIFEST_FILE).read_bytes()

    # A wrong field name and a wrong enum value: the parser is strict, so the checks below mean something.
    good = (repository / "digits-encoder" / "config.pbtxt").read_text()
    misspelled, wrong_type = tmp_path / "misspelled.pbtxt", tmp_path / "wrong_type.pbtxt"
    misspelled.write_text(good.replace("max_batch_size:", "max_batch_sise:"))
    wrong_type.write_text(good.replace("TYPE_FP32", "TYPE_FLOAT32", 1))
    configs = [model / "config.pbtxt" for model in exported.values()]
    parsed = parse_configs(*configs, misspelled, wrong_type)
    assert "max_batch_sise" in parsed[str(misspelled)]["error"]
    assert "TYPE_FLOAT32" in parsed[str(wrong_type)]["error"]

    for (bundle, part), model in exported.items():
        entry = parsed[str(model / "config.pbtxt")]
        assert "error" not in entry, entry
        config = entry["config"]
        session = ort.InferenceSession(model / "1" / "model.onnx", providers=["CPUExecutionProvider"])
        batched = part != "bounds"
        assert config["name"] == model.name and config["platform"] == "onnxruntime_onnx"
        assert config["input"] == graph_tensors(session.get_inputs(), batched)
        assert config["output"] == graph_tensors(session.get_outputs(), batched)
        digits = bundle == digits_bundle
        if batched:
            assert config["max_batch_size"] == (1024 if digits else 64)
            assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000 if digits else 500}
        else:
            # Triton joins requests along axis 0 of every input; eps [k, n, L] has its rows on axis 1.
            assert config["max_batch_size"] == 0 and config["dynamic_batching"] is None
            assert config["input"][1]["name"] == "eps" and config["input"][1]["dims"][:2] == [-1, -1]
        assert config["instance_group"] == [
            {"count": 1, "kind": "KIND_GPU"} if digits else {"count": 2, "kind": "KIND_CPU"}
        ]
    by_name = {entry["config"]["name"]: entry["config"] for entry in parsed.values() if "config" in entry}
    assert [spec["data_type"] for spec in by_name["digits-bounds"]["output"]] == ["TYPE_FP64"] * 5
    assert [spec["name"] for spec in by_name["records-decoder"]["output"]] == ["mean", "log_scale"]
    assert by_name["digits-pathway"]["output"] == [{"name": "pathway_distance", "data_type": "TYPE_FP64", "dims": [1]}]


def test_the_pathway_model_gives_vae_serves_pathway_scores(server, digits_bundle, tmp_path, capsys):
    code, _, err = export_triton(capsys, "--bundle", str(digits_bundle), "--out", str(tmp_path / "triton"))
    assert code == 0, err
    raw = np.random.default_rng(4).integers(0, 17, size=(6, 64)).astype(np.float32)
    reply = server.stub.ScoreAnomaly(vae_pb2.ScoreAnomalyRequest(x=tensor(raw), score=vae_pb2.SCORE_TYPE_PATHWAY))
    manifest = json.loads((digits_bundle / MANIFEST_FILE).read_text())
    loc, scale = (np.asarray(manifest["preprocessing"][key], np.float32) for key in ("loc", "scale"))
    session = ort.InferenceSession(tmp_path / "triton/digits-pathway/1/model.onnx", providers=["CPUExecutionProvider"])
    (distance,) = session.run(["pathway_distance"], {"x": (raw - loc) / scale})
    np.testing.assert_array_equal(distance, np.array(reply.scores))


def test_the_bounds_model_with_the_clients_noise_gives_vae_serves_elbo(server, digits_bundle, tmp_path, capsys):
    """What docs/scaling.md tells a Triton client to do: preprocess, draw eps by the protocol, run."""
    code, _, err = export_triton(capsys, "--bundle", str(digits_bundle), "--out", str(tmp_path / "triton"))
    assert code == 0, err
    raw = np.random.default_rng(3).integers(0, 17, size=(5, 64)).astype(np.float32)  # grey levels 0..16
    seed, k = 11, 20
    reply = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(raw), k=k, seed=seed))
    manifest = json.loads((digits_bundle / MANIFEST_FILE).read_text())
    loc, scale = (np.asarray(manifest["preprocessing"][key], np.float32) for key in ("loc", "scale"))
    x = (raw - loc) / scale  # the manifest's preprocessing (pixel / 16), in float32
    eps = np.random.default_rng([seed, 0]).standard_normal((k, len(x), manifest["latent_dim"]), np.float32)
    session = ort.InferenceSession(tmp_path / "triton/digits-bounds/1/model.onnx", providers=["CPUExecutionProvider"])
    elbo, iwae = session.run(["elbo", "iwae"], {"x": x, "eps": eps})
    # One graph run per request on both sides (vae-serve never joins requests in the bounds graph).
    assert np.array_equal(elbo, np.array(reply.elbo)) and np.array_equal(iwae, np.array(reply.iwae))


def test_a_bundle_without_a_bounds_graph_exports_its_two_graphs_and_says_so(digits_bundle, tmp_path, capsys):
    bundle = without_bounds_graph(digits_bundle, tmp_path / "old")
    code, summary, err = export_triton(capsys, "--bundle", str(bundle), "--out", str(tmp_path / "triton"))
    assert code == 0, err
    assert summary["models"] == ["digits-encoder", "digits-decoder", "digits-pathway"]
    assert summary["bounds_graph"] is False and "no bounds graph" in err
    assert sorted(path.name for path in (tmp_path / "triton").iterdir()) == [
        "digits-decoder",
        "digits-encoder",
        "digits-pathway",
    ]


def test_versions_name_the_directory_and_an_existing_one_needs_force(digits_bundle, tmp_path, capsys):
    repository = tmp_path / "triton"
    named = tmp_path / "named"
    copy_as_version(digits_bundle, named, "2026-11-29")
    code, _, err = export_triton(capsys, "--bundle", str(named), "--out", str(repository))
    assert code == 2 and "'2026-11-29' is not a positive integer" in err and "--version N" in err
    assert not repository.exists()
    code, summary, err = export_triton(capsys, "--bundle", str(named), "--out", str(repository), "--version", "4")
    assert code == 0, err
    assert summary["triton_version"] == 4 and (repository / "digits-encoder" / "4" / "model.onnx").is_file()
    code, _, err = export_triton(capsys, "--bundle", str(named), "--out", str(repository), "--version", "4")
    assert code == 2 and "--force" in err
    code, _, err = export_triton(capsys, "--bundle", str(named), "--out", str(repository), "--version", "4", "--force")
    assert code == 0, err
    # A bundle in a model repository keeps its manifest's identity here, with a note of the layout's.
    in_repository = tmp_path / "repo" / "other" / "7"
    copy_as_version(digits_bundle, in_repository, "1")
    code, summary, err = export_triton(capsys, "--bundle", str(in_repository), "--out", str(repository))
    assert code == 0 and summary["models"][0] == "digits-encoder" and summary["triton_version"] == 1
    assert "--name other --version 7" in err


def test_a_damaged_bundle_is_refused_and_nothing_is_written(bundle_copy, tmp_path, capsys):
    decoder = bundle_copy / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0x01
    decoder.write_bytes(bytes(data))
    code, _, err = export_triton(capsys, "--bundle", str(bundle_copy), "--out", str(tmp_path / "triton"))
    assert code == 1 and "decoder.onnx" in err and "bundle refused" in err
    assert not (tmp_path / "triton").exists()


def test_export_triton_needs_no_train_extra(digits_bundle, tmp_path):
    result = vae_train_without(TRAIN_EXTRA, "export-triton", "--bundle", str(digits_bundle), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"][-1] == "digits-pathway"
