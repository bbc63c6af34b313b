"""Deployment assets: Prometheus rules (checked and unit-tested by promtool), the Grafana dashboard
and the rules naming only metrics a live server exports, and the Kubernetes overlays rendered by
kustomize and validated strictly against the Kubernetes schemas.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.server_process import tensor
from tests.test_server_lifecycle import scrape
from vae_serve.api.v1 import vae_pb2

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "base/prometheus"
KUBERNETES_VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (scripts/test.sh installs it when run as root)")


def test_prometheus_rules_pass_promtool_and_their_unit_tests():
    need("promtool")
    for command in (
        ("promtool", "check", "rules", "rules.yml"),
        ("promtool", "test", "rules", "rules_test.yml"),
        ("promtool", "check", "config", "prometheus.yml"),
    ):
        result = run(*command, cwd=PROMETHEUS)
        assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}  # fmt: skip
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "rules_test.yml").read_text()))
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"


def test_rules_and_dashboard_name_only_metrics_a_live_server_exports(server):
    x = tensor(np.random.default_rng(0).random((6, 64)))
    server.stub.ScoreAnomaly(vae_pb2.ScoreAnomalyRequest(x=x, seed=1))
    server.stub.Elbo(vae_pb2.ElboRequest(x=x, seed=1))
    families = list(text_string_to_metric_families(scrape(server.metrics_url)))
    exported = {family.name for family in families} | {sample.name for family in families for sample in family.samples}
    dashboard = json.loads((DEPLOY / "grafana/vae-serve.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    for source, text in (("rules.yml", (PROMETHEUS / "rules.yml").read_text()), ("dashboard", "\n".join(expressions))):
        named = set(re.findall(r"\bvae_[a-z_]+", text))
        assert named and named <= exported, f"{source} names metrics the server does not export: {named - exported}"


def rendered(overlay: str, tmp_path: Path) -> tuple[Path, list[dict]]:
    result = run("kubectl", "kustomize", str(DEPLOY / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(result.stdout)
    return path, [document for document in yaml.safe_load_all(result.stdout) if document]


def container(documents: list[dict]) -> dict:
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_kubernetes_overlay_renders_and_validates_strictly(overlay, tmp_path):
    need("kubectl")
    path, documents = rendered(overlay, tmp_path)
    result = run(KUBERNETES_VALIDATE, "--strict", str(path))
    # An unknown kind is only a warning to the tool; here it is a failure.
    assert result.returncode == 0 and "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.count(" passed ") == len(documents)
    kinds = sorted(document["kind"] for document in documents)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]

    deployment = next(document for document in documents if document["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(documents)
    env = {item["name"]: item["value"] for item in main["env"]}
    assert pod["securityContext"]["runAsNonRoot"] and main["securityContext"]["readOnlyRootFilesystem"]
    assert pod["terminationGracePeriodSeconds"] > float(env["VAE_GRACE_S"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == 50051
    service = next(document for document in documents if document["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless, for client-side round_robin
    if overlay == "gpu":
        assert env["VAE_DEVICE"] == "cuda" and main["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert main["image"] == "vae-serve:gpu"
    else:
        assert env["VAE_DEVICE"] == "cpu" and main["image"] == "vae-serve:cpu"
