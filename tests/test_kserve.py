"""deploy/kserve/: the ServingRuntime and InferenceService, built field by field through KServe's SDK
(its typed models and the Kubernetes ones inside them, strictly: tests/kserve_probe.py, run in its own
venv since kserve pins protobuf below ours), consistent with each other and with deploy/base; the
runtime's arguments and environment accepted by vae-serve's own parser, and its command line, run
against a model repository, answering the README's request on the probes' paths.
"""

import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.server_process import start_server, tensor
from tests.venv_probe import KSERVE_PYTHON, ROOT, run_probe
from vae_serve.api.v1 import vae_pb2
from vae_serve.service.cli_settings import build_parser, options, settings_from
from vae_serve.service.server import ANSWER_MARGIN_S
from vae_serve.service.settings import Settings

KSERVE = ROOT / "deploy/kserve"
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's contents
REST_PORT, GRPC_PORT = 8080, 8081  # what KServe expects of a v2 runtime: HTTP, and gRPC over h2c


def probe(*paths: Path) -> tuple[int, dict]:
    """Run tests/kserve_probe.py on ``paths``: its exit code and its JSON report."""
    result = run_probe(KSERVE_PYTHON, "KServe SDK", "kserve_probe.py", *map(str, paths))
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    """Every manifest in deploy/kserve/, as the SDK's typed objects give it back, by kind."""
    code, report = probe(*sorted(KSERVE.glob("*.yaml")))
    assert code == 0 and report["ok"], "\n".join(report["errors"])
    by_kind = {document["kind"]: document["object"] for document in report["documents"]}
    assert sorted(by_kind) == ["InferenceService", "ServingRuntime"], by_kind.keys()
    return by_kind


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """The same manifests read as plain YAML, by kind: for the tests that need no SDK (the probe
    proves the typed objects give these documents back unchanged)."""
    documents = [yaml.safe_load(path.read_text()) for path in sorted(KSERVE.glob("*.yaml"))]
    return {document["kind"]: document for document in documents}


def runtime_container(documents: dict[str, dict]) -> dict:
    (container,) = documents["ServingRuntime"]["spec"]["containers"]
    return container


def test_runtime_speaks_v2_on_the_ports_kserve_expects(built):
    spec = built["ServingRuntime"]["spec"]
    container = runtime_container(built)
    assert container["name"] == "kserve-container"  # the name KServe merges the predictor's model into
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http1"] == REST_PORT and ports["h2c"] == GRPC_PORT
    # KServe's Service maps port 80, which its ingress routes to, onto the first container port.
    assert container["ports"][0]["containerPort"] == REST_PORT
    for probe_name, path in (("startupProbe", "ready"), ("readinessProbe", "ready"), ("livenessProbe", "live")):
        assert container[probe_name]["httpGet"] == {"path": f"/v2/health/{path}", "port": REST_PORT}, probe_name

    base = yaml.safe_load((ROOT / "deploy/base/deployment.yaml").read_text())
    (base_container,) = base["spec"]["template"]["spec"]["containers"]
    assert container["image"] == base_container["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and container["securityContext"]["runAsNonRoot"]


def test_inference_service_uses_the_runtime_and_mounted_storage(built):
    runtime, service = built["ServingRuntime"], built["InferenceService"]
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert model["modelFormat"]["name"] == "vae-serve-bundle"
    assert model["modelFormat"]["name"] in {entry["name"] for entry in formats}
    if "version" in model["modelFormat"]:
        assert model["modelFormat"]["version"] in {entry.get("version") for entry in formats}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert re.match(r"^(pvc|s3|gs|https?)://\S+/\S+$", model["storageUri"]), model["storageUri"]
    # Three container ports: Knative would refuse them, so the service asks for a plain Deployment.
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("Standard", "RawDeployment")
    grace_s = float(next(item["value"] for item in runtime_container(built)["env"] if item["name"] == "VAE_GRACE_S"))
    assert predictor["terminationGracePeriodSeconds"] > grace_s + ANSWER_MARGIN_S


def test_runtime_pods_are_found_by_the_base_scrape_job(built):
    spec = built["ServingRuntime"]["spec"]
    metrics_port = next(port for port in runtime_container(built)["ports"] if port["name"] == "metrics")
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(metrics_port["containerPort"])
    scrape = yaml.safe_load((ROOT / "deploy/base/prometheus/scrape.yml").read_text())
    keeps = {rule["source_labels"][0]: rule["regex"] for rule in scrape["scrape_configs"][0]["relabel_configs"]
             if rule.get("action") == "keep"}  # fmt: skip
    assert re.fullmatch(
        keeps["__meta_kubernetes_pod_label_app_kubernetes_io_name"], spec["labels"]["app.kubernetes.io/name"]
    )
    assert re.fullmatch(keeps["__meta_kubernetes_pod_container_port_name"], metrics_port["name"])


def image_environment() -> dict[str, str]:
    """The VAE_* variables the Dockerfile bakes into the image (its ENV lines, comments left out)."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    return dict(re.findall(r"(?:^|\s)(VAE_[A-Z0-9_]+)=(\S*?)\s*\\?$", "\n".join(lines), flags=re.MULTILINE))


def container_settings(manifests: dict[str, dict], monkeypatch) -> Settings:
    """The Settings vae-serve would start with in the runtime's container: the image's environment,
    the runtime's env over it, and the runtime's args, through the real parser.
    """
    container = runtime_container(manifests)
    for name in [name for name in os.environ if name.startswith("VAE_")]:
        monkeypatch.delenv(name)
    environment = {**image_environment(), **{item["name"]: item["value"] for item in container.get("env", [])}}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    args = list(container["args"])
    parsed, unknown = build_parser().parse_known_args(args)
    assert not unknown, f"arguments vae-serve does not accept: {unknown}"
    return settings_from(parsed)


def test_runtime_arguments_are_flags_vae_serve_accepts(manifests, monkeypatch):
    container = runtime_container(manifests)
    known_env = {option.env for option in options()}
    assert {item["name"] for item in container["env"]} <= known_env, "env names vae-serve does not read"
    settings = container_settings(manifests, monkeypatch)
    assert settings.model_repository == Path(MODEL_MOUNT) and settings.bundle is None
    assert settings.host == "0.0.0.0" and settings.port == GRPC_PORT
    metrics_port = next(port["containerPort"] for port in container["ports"] if port["name"] == "metrics")
    assert settings.metrics_port == metrics_port


def test_runtime_serves_rest_on_the_http_port(manifests, monkeypatch):
    assert f"--http-port={REST_PORT}" in runtime_container(manifests)["args"]
    assert container_settings(manifests, monkeypatch).http_port == REST_PORT


def http_json(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_runtime_command_line_answers_the_readme_request(manifests, digits_bundle, tmp_path):
    # What the storage initializer leaves at /mnt/models: a repository with digits/1.
    repository = tmp_path / "models"
    shutil.copytree(digits_bundle, repository / "digits" / "1")
    container = runtime_container(manifests)
    # The runtime's own arguments and environment, but local: the repository, loopback, free ports.
    local = {
        "--model-repository": str(repository),
        "--host": "127.0.0.1",
        **dict.fromkeys(("--port", "--http-port", "--metrics-port"), "0"),
    }
    args = []
    for arg in container["args"]:
        flag, value = arg.split("=", 1)
        args += [flag, local.get(flag, value)]
    server = start_server(*args, env={item["name"]: item["value"] for item in container["env"]})
    try:
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            status, _ = http_json(server.http_url + container[probe_name]["httpGet"]["path"])
            assert status == 200, probe_name
        request = (KSERVE / "infer-request.json").read_bytes()
        status, reply = http_json(f"{server.http_url}/v2/models/digits-elbo/infer", request)
        assert status == 200 and reply["model_name"] == "digits-elbo" and reply["parameters"] == {"seed": 11}
        elbo = next(output for output in reply["outputs"] if output["name"] == "elbo")
        sent = json.loads(request)
        x = np.array(sent["inputs"][0]["data"], dtype=np.float32).reshape(sent["inputs"][0]["shape"])
        reference = server.stub.Elbo(vae_pb2.ElboRequest(x=tensor(x), **sent["parameters"]))
        assert elbo["data"] == list(reference.elbo)
    finally:
        assert server.stop() == 0, server.log()


def misspell(document: dict, path: tuple, wrong: str) -> None:
    """Rename the key at ``path`` (keys and list indexes) of ``document`` to ``wrong``, in place."""
    *parents, key = path
    node = document
    for step in parents:
        node = node[step]
    node[wrong] = node.pop(key)


MISSPELLINGS = [  # (manifest, path of a key, the key misspelled)
    ("inferenceservice.yaml", ("spec", "predictor", "model", "storageUri"), "storageURI"),
    ("inferenceservice.yaml", ("spec", "predictor", "model", "modelFormat", "name"), "nmae"),
    ("servingruntime.yaml", ("spec", "protocolVersions"), "protocolVersion"),
    ("servingruntime.yaml", ("spec", "containers", 0, "ports", 1, "containerPort"), "container_port"),
    ("servingruntime.yaml", ("spec", "containers", 0, "readinessProbe", "httpGet"), "httpget"),
]


def test_a_misspelled_field_is_rejected(tmp_path):
    # One probe run for every case (the SDK takes a couple of seconds to import): each file is its own.
    expected = {}
    for index, (manifest, path, wrong) in enumerate(MISSPELLINGS):
        document = yaml.safe_load((KSERVE / manifest).read_text())
        misspell(document, path, wrong)
        broken = tmp_path / f"{index}-{manifest}"
        broken.write_text(yaml.safe_dump(document, sort_keys=False))
        where = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in (*path[:-1], wrong))
        expected[broken] = f"{broken.name}#0{where}: unknown field"
    code, report = probe(*expected)
    assert code == 1 and not report["ok"] and not report["documents"]
    for broken, error in expected.items():
        mine = [found for found in report["errors"] if found.startswith(f"{broken.name}#")]
        assert len(mine) == 1 and mine[0].startswith(error), (error, report["errors"])
