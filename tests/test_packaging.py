"""The package as users get it: the wheel built from this checkout, installed without extras into a
clean venv, run from a folder that is not the checkout.

Acceptance: site-packages gains only ``vae_serve``; ``vae-serve``, ``vae-client``, ``vae-healthcheck``
and ``vae-train verify`` answer ``--help``; ``from vae_serve.client import VaeClient`` works; the base
install has no torch. Also here: nothing imports the old top-level names, and ``--processes`` children
run the installed module whatever the working directory holds.
"""

import ast
import email
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_process import start_server
from vae_serve.service.processes import child_command

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST_INFO = f"vae_serve-{PYPROJECT['project']['version']}.dist-info"
# The names the modules had before they became vae_serve.*; `vae` was the generated code's package.
OLD_TOP_LEVEL = {"service", "client", "export", "vae"}
PIP_TIMEOUT_S = 600
HELP_COMMANDS = [
    ["vae-serve", "--help"],
    ["vae-client", "--help"],
    ["vae-healthcheck", "--help"],
    ["vae-train", "verify", "--help"],
]
EXIT_IF_IMPORTED = "import sys\n\nsys.exit(42)\n"


@dataclass(frozen=True)
class Installed:
    source: Path  # the checkout's files the wheel was built from
    wheel: Path
    bin: Path  # the clean venv's bin/
    site_packages: Path
    added: set[str]  # top-level entries that installing the wheel added to site-packages
    workdir: Path  # an empty folder to run commands in: the checkout must never be what gets imported

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=self.workdir,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )


def clean_env() -> dict[str, str]:
    # Nothing may point the clean venv back at the dev venv or the checkout. PIP_* stays: it says
    # where the package index is.
    return {
        name: value for name, value in os.environ.items() if not name.startswith("PYTHON") and name != "VIRTUAL_ENV"
    }


def checked(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def source_files() -> list[str]:
    """The checkout's files that a commit would hold: tracked, or new and not ignored."""
    listing = checked(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]  # not deleted ones


def copy_checkout(destination: Path) -> Path:
    # setuptools builds in place: from the checkout itself it would leave build/ there, and whatever
    # stale file build/lib already holds (a module deleted since) would go into the wheel.
    for name in source_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


def base_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without the extras' ones."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"{DIST_INFO}/METADATA"))
    return [requirement for requirement in metadata.get_all("Requires-Dist", []) if "extra ==" not in requirement]


def pip_install(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=PIP_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(
            f"pip install {' '.join(args)} failed in a clean venv. The dependencies come from the package "
            f"index: check that it can be reached (network, pip.conf, PIP_INDEX_URL).\n{result.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel, built with the dev venv's setuptools and installed without extras into a clean venv."""
    source = copy_checkout(tmp_path_factory.mktemp("source"))
    wheels = tmp_path_factory.mktemp("wheels")
    # No build isolation: the dev venv's setuptools builds it, so no build dependency is fetched.
    build = ["wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "--quiet", "-w", wheels]
    checked([sys.executable, "-m", "pip", *build, source])
    (wheel,) = wheels.glob("*.whl")
    venv = tmp_path_factory.mktemp("venv")
    checked([sys.executable, "-m", "venv", venv], env=clean_env())
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(checked([python, "-c", purelib], env=clean_env()).stdout.strip())
    # The dependencies first, so that the listing after the wheel's own install shows what it adds.
    pip_install(python, *base_requirements(wheel))
    before = set(os.listdir(site_packages))
    pip_install(python, str(wheel))
    added = set(os.listdir(site_packages)) - before - {"__pycache__"}
    return Installed(source, wheel, venv / "bin", site_packages, added, tmp_path_factory.mktemp("empty"))


def test_the_wheel_holds_one_package_with_its_stubs_and_markers(installed):
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
    assert {name.split("/", 1)[0] for name in names} == {"vae_serve", DIST_INFO}
    # Every module, stub and py.typed of the mapped folders, under its vae_serve.* name: a new
    # subpackage missing from [tool.setuptools] packages shows up here.
    expected = set()
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for path in (installed.source / folder).rglob("*"):
            if path.suffix in (".py", ".pyi") or path.name == "py.typed":
                expected.add("/".join([*package.split("."), *path.relative_to(installed.source / folder).parts]))
    assert {"vae_serve/api/v1/vae_pb2.pyi", "vae_serve/api/oip/grpc_service_pb2.pyi"} <= expected
    assert {"vae_serve/core/py.typed", "vae_serve/client/py.typed"} <= expected
    assert sorted(expected - names) == []
    # The explorer page's files (package data, not modules) ship too.
    ui = {f"vae_serve/service/rest/ui/{path.name}" for path in (installed.source / "service/rest/ui").iterdir()}
    assert ui and sorted(ui - names) == []


def test_installing_the_wheel_adds_only_vae_serve(installed):
    assert installed.added == {"vae_serve", DIST_INFO}


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_console_scripts_answer_help(installed, command):
    result = installed.run(*command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")


def test_the_client_imports_from_site_packages(installed):
    result = installed.run(
        "python",
        "-c",
        "import vae_serve.client; from vae_serve.client import VaeClient; print(vae_serve.client.__file__)",
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().is_relative_to(installed.site_packages.resolve())


def test_the_base_install_imports_the_server_without_torch(installed):
    result = installed.run("python", "-c", "import vae_serve.service.server")
    assert result.returncode == 0, result.stderr
    for extra_only in ("torch", "matplotlib"):  # [train] and [plot]
        result = installed.run("python", "-c", f"import {extra_only}")
        assert result.returncode == 1 and f"No module named '{extra_only}'" in result.stderr, result.stderr


def old_imports(path: Path) -> list[str]:
    """``path:line: statement`` for each import of an old top-level name in a Python file."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        return [f"{path.relative_to(ROOT)}:{error.lineno}: cannot parse, so cannot check: {error.msg}"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:  # relative imports name no package
            modules = [node.module]
        else:
            continue
        if any(module.split(".")[0] in OLD_TOP_LEVEL for module in modules):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_imports_the_old_top_level_names():
    # An AST walk rather than a grep: it also sees `import os, service` and indented imports, and
    # no docstring sentence that begins with "from client" can trip it.
    offenders = [found for name in source_files() if name.endswith(".py") for found in old_imports(ROOT / name)]
    assert offenders == [], "imports of the old top-level names:\n" + "\n".join(offenders)


def test_child_processes_run_the_installed_module():
    command = child_command(["--bundle", "models/digits"], port=4321, metrics_port=0)
    # -P: the working directory is not put on sys.path, so `-m` finds the installed vae_serve.service.
    assert command[:4] == [sys.executable, "-P", "-m", "vae_serve.service"]
    assert command[4:6] == ["--bundle", "models/digits"]


def test_processes_ignore_modules_in_the_working_directory(digits_bundle, tmp_path, monkeypatch):
    # Decoys that would end any process importing them with 42: a vae_serve.service package (what
    # `python -m vae_serve.service` without -P picks up from the working directory) and the old
    # top-level `service`.
    for decoy in ("vae_serve/service/__init__.py", "vae_serve/service/__main__.py", "service/__init__.py"):
        (tmp_path / decoy).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / decoy).write_text(EXIT_IF_IMPORTED)
    without_p = subprocess.run([sys.executable, "-m", "vae_serve.service", "--help"], cwd=tmp_path, capture_output=True)
    assert without_p.returncode == 42  # the decoy works: this is what -P must prevent
    monkeypatch.chdir(tmp_path)  # start_server's Popen inherits it
    server = start_server("--bundle", str(digits_bundle), "--processes", "2")
    try:
        children = checked(["pgrep", "-P", server.process.pid]).stdout.split()
        assert len(children) == 2
        for child in children:
            arguments = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            assert arguments[1:4] == ["-P", "-m", "vae_serve.service"]
    finally:
        assert server.stop() == 0, server.log()


def test_the_plane_imports_no_protocol():
    # The plane (service/plane/) is what every binding calls: numpy in, numpy out. Every one of its
    # modules is imported in a fresh interpreter; none may pull in a wire protocol or a binding.
    plane = ROOT / "service" / "plane"
    modules = sorted(f"vae_serve.service.plane.{path.stem}" for path in plane.glob("*.py") if path.stem != "__init__")
    assert "vae_serve.service.plane.operations" in modules
    forbidden = (
        "grpc",
        "google.protobuf",
        "aiohttp",
        "vae_serve.api",
        "vae_serve.service.grpc",
        "vae_serve.service.rest",
    )
    assert modules_imported(modules, forbidden) == []


def modules_imported(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """Which of ``forbidden`` (packages, with their sub-modules) a fresh interpreter holds once it has
    imported every one of ``modules``."""
    program = (
        "import importlib, sys\n"
        f"for module in {modules!r}: importlib.import_module(module)\n"
        f"forbidden = {forbidden!r}\n"
        "print(sorted(name for name in sys.modules if any(name == f or name.startswith(f + '.') for f in forbidden)))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    return ast.literal_eval(result.stdout.strip())


def test_observation_imports_no_plane_or_binding_and_the_core_no_opentelemetry():
    # Observation (service/observe/) is handed in, to the plane and the bindings: the arrows point
    # down, so it imports neither of them (nor their wire protocols). The core is observed only
    # through the hook it is handed, so it imports no OpenTelemetry. A fresh interpreter each.
    observe = sorted(f"vae_serve.service.observe.{path.stem}" for path in (ROOT / "service" / "observe").glob("*.py"))
    assert {"vae_serve.service.observe.observer", "vae_serve.service.observe.tracing"} <= set(observe)
    rooms_above = ("vae_serve.service.plane", "vae_serve.service.grpc", "vae_serve.service.rest", "grpc", "aiohttp")
    assert modules_imported(observe, rooms_above) == []
    core = sorted(f"vae_serve.core.{path.stem}" for path in (ROOT / "core").rglob("*.py"))
    assert "vae_serve.core.runtime" in core
    assert modules_imported(core, ("opentelemetry",)) == []


def test_monitoring_imports_no_plane_or_binding():
    # The plane hands monitoring plain numbers (monitor/events.py ScoredEvent); the arrows point down,
    # so service/monitor/ imports neither the plane nor a binding nor gRPC. (aiohttp is allowed: the
    # decision log's HTTP sink is a client of its own.) A fresh interpreter.
    monitor = sorted(f"vae_serve.service.monitor.{path.stem}" for path in (ROOT / "service" / "monitor").glob("*.py"))
    assert {"vae_serve.service.monitor.monitor", "vae_serve.service.monitor.decisions"} <= set(monitor)
    rooms_above = ("vae_serve.service.plane", "vae_serve.service.grpc", "vae_serve.service.rest", "grpc")
    assert modules_imported(monitor, rooms_above) == []
