"""vae-train's command line and the exporter's structure: subcommands, a base install without the
[train] extra, no import cycles in export/, and manifests built and sealed through the schema."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vae_serve.export
from vae_serve.core.bundle import load_bundle
from vae_serve.core.manifest import MANIFEST_FILE, Manifest, manifest_digest, seal, seal_manifest
from vae_serve.export import cli
from vae_serve.export.bundle.writer import manifest_text

COMMANDS = ("train", "calibrate", "verify")
# The [train] extra: what a base install (no extras) lacks.
TRAIN_EXTRA = ("torch", "sklearn", "tqdm", "onnx", "onnxscript", "matplotlib")
# What `vae-train calibrate` does without (it needs tqdm, and scikit-learn for --dataset digits).
TORCH_AND_ONNX = ("torch", "onnx", "onnxscript", "matplotlib")
# Runs vae-train in a fresh interpreter where the modules named in argv[1] cannot be found, as when
# they are not installed (a finder, not None in sys.modules, which libraries probing sys.modules trip on).
WITHOUT = """
import sys


class NotInstalled:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled(set(sys.argv[1].split(","))))
from vae_serve.export.cli import main

sys.exit(main(sys.argv[2:]))
"""


def vae_train_without(missing: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    """vae-train with the ``missing`` modules not importable."""
    command = [sys.executable, "-c", WITHOUT, ",".join(missing), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def vae_train_without_train_extra(*args: str) -> subprocess.CompletedProcess:
    return vae_train_without(TRAIN_EXTRA, *args)


def test_help_lists_every_command():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("vae-train")), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("commands:")[1]
    for command in cli.COMMANDS:
        assert command.NAME in listed and command.SUMMARY in " ".join(listed.split())


@pytest.mark.parametrize("args", [[], ["--dataset", "digits", "--out", "x"]])
def test_a_command_is_required(capsys, args):
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], *([name, "--help"] for name in COMMANDS)])
def test_help_needs_no_train_extra(args):
    result = vae_train_without_train_extra(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(['vae-train', *args[:-1]])} ")


def test_verify_needs_no_train_extra(digits_bundle):
    result = vae_train_without_train_extra("verify", "--bundle", str(digits_bundle))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["verified"] is True and summary["name"] == "digits"
    assert set(summary) == {"bundle", "verified", "name", "version", "likelihood", "input_shape", "latent_dim", "test"}


def test_train_without_the_extra_says_what_to_install(tmp_path):
    result = vae_train_without_train_extra("train", "--dataset", "digits", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "pip install 'vae-serve[train]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_calibrate_needs_no_torch(digits_bundle, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "digits" / "1")
    result = vae_train_without(TORCH_AND_ONNX, "calibrate", "--bundle", str(bundle), "--dataset", "digits")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "2"
    load_bundle(tmp_path / "digits" / "2")


def test_the_cli_module_imports_nothing_heavy():
    probe = f"import sys, vae_serve.export.cli; print(sorted(set({TRAIN_EXTRA!r}) & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def export_imports() -> dict[str, set[str]]:
    """Each export/ module ("cli", "sources.npz") and the export/ modules it imports, at its top or
    inside a function; a package's ``__init__`` is named by the package ("sources")."""
    folder = Path(vae_serve.export.__file__).parent
    paths = {
        ".".join(path.relative_to(folder).with_suffix("").parts).removesuffix("__init__").rstrip("."): path
        for path in folder.rglob("*.py")
    }
    modules = set(paths) - {""}

    def named(dotted: str) -> str:
        return dotted.removeprefix("vae_serve.export.")

    graph = {}
    for module in modules:
        imported = set()
        for node in ast.walk(ast.parse(paths[module].read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vae_serve.export"):
                base = "" if node.module == "vae_serve.export" else named(node.module)
                # `from vae_serve.export.sources import npz`: the module npz; `... import load_source`: the package.
                for alias in node.names:
                    submodule = f"{base}.{alias.name}".lstrip(".")
                    imported.add(submodule if submodule in modules else base)
            elif isinstance(node, ast.Import):
                imported |= {named(alias.name) for alias in node.names if alias.name.startswith("vae_serve.export.")}
        graph[module] = (imported & modules) - {module}
    return graph


def test_no_import_cycles_in_export():
    graph = export_imports()
    assert "cli" in graph and graph["commands.recalibrate"] and "commands.pipeline" not in graph["commands.recalibrate"]

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in graph[start] - seen:
            seen.add(module)
            if module == target or reaches(module, target, seen):
                return True
        return False

    cycles = [module for module in graph if reaches(module, module, set())]
    assert cycles == []


# export/'s rooms, lowest first: a module may import its own room and the rooms below it, never one above.
EXPORT_ROOMS = ("sources", "models", "bundle", "commands", "cli")


def test_export_rooms_import_downward_only():
    graph = export_imports()
    assert {module.split(".")[0] for module in graph} == set(EXPORT_ROOMS)
    upward = [
        f"{module} -> {imported}"
        for module, imports in graph.items()
        for imported in imports
        if EXPORT_ROOMS.index(imported.split(".")[0]) > EXPORT_ROOMS.index(module.split(".")[0])
    ]
    assert upward == []


def test_written_manifest_is_its_schema_dump_and_verifies(digits_bundle):
    text = (digits_bundle / MANIFEST_FILE).read_text()
    document = json.loads(text)
    manifest = Manifest.model_validate(document)
    assert manifest.document() == document
    assert manifest_digest(document) == document["manifest_sha256"]
    assert manifest_text(manifest) == text  # same bytes from the typed manifest
    # Unsealing and sealing again gives the same manifest, digest included.
    assert seal_manifest(manifest.body(), manifest.files) == manifest


def test_calibrate_keeps_keys_a_newer_writer_added(digits_bundle, tmp_path, capsys):
    old = tmp_path / "repository" / "digits" / "1"
    shutil.copytree(digits_bundle, old)
    document = json.loads((old / MANIFEST_FILE).read_text())
    document["signature"] = {"by": "a newer writer"}
    document["input"]["units"] = "grey levels"
    (old / MANIFEST_FILE).write_text(json.dumps(seal(document)))
    load_bundle(old)  # extra keys are allowed, and sealed

    exit_code = cli.main(["calibrate", "--bundle", str(old), "--dataset", "digits", "--no-progress"])
    assert exit_code == 0, capsys.readouterr().err
    new = json.loads((old.with_name("2") / MANIFEST_FILE).read_text())
    assert new["signature"] == {"by": "a newer writer"} and new["input"]["units"] == "grey levels"
    assert new["version"] == "2" and new["calibration"]["replaces"]["version"] == "1"
    assert new["golden"] == document["golden"] and new["files"] == document["files"]
    assert load_bundle(old.with_name("2")).manifest.model_extra == {"signature": {"by": "a newer writer"}}


def test_a_name_the_schema_refuses_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "--out", str(tmp_path / "x"), "--name", "../escape"])
    assert exited.value.code == 2 and "--name" in capsys.readouterr().err
