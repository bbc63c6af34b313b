"""``force`` replaces only a bundle: export_bundle(force=True), ``vae-train calibrate --force`` and
``vae-train export-triton --force`` may replace an empty folder or one they wrote, and refuse anything
else, naming what is in the way and deleting nothing (issue 20, section 2)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.test_export_api import export
from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli
from vae_serve.export.bundle.writer import PublishError, check_destination, publish, staging_dir_for


@pytest.fixture(scope="module")
def raw_digits() -> np.ndarray:
    """Raw grey levels 0..16 as [n, 1, 8, 8], as tests/test_export_api.py exports them."""
    return load_digits().images.astype(np.float32)[:300, None]


def user_folder(path: Path) -> Path:
    """A folder of a user's own files: a thesis and a data folder with two files."""
    (path / "data").mkdir(parents=True)
    (path / "thesis.txt").write_text("four years of work", encoding="utf-8")
    (path / "data" / "a.csv").write_text("1,2\n", encoding="utf-8")
    (path / "data" / "b.csv").write_text("3,4\n", encoding="utf-8")
    return path


def no_staging_left(folder: Path) -> bool:
    return not [entry for entry in folder.iterdir() if ".staging-" in entry.name or ".probe-" in entry.name]


def vae_train(capsys, *args: str) -> tuple[int, str]:
    code = cli.main([*args, "--no-progress"] if args[0] == "calibrate" else list(args))
    return code, capsys.readouterr().err


def test_export_bundle_force_refuses_a_folder_that_is_not_a_bundle_and_keeps_its_files(tmp_path, raw_digits):
    out = user_folder(tmp_path / "thesis")
    with pytest.raises(PublishError, match=r"not a model bundle \(no manifest.json\) and holds data/, thesis.txt"):
        export(out, data=raw_digits, force=True)
    assert (out / "thesis.txt").read_text(encoding="utf-8") == "four years of work"
    assert sorted(entry.name for entry in out.iterdir()) == ["data", "thesis.txt"]
    assert no_staging_left(tmp_path)


def test_export_bundle_force_replaces_an_empty_folder_and_a_bundle_but_not_extra_files(tmp_path, raw_digits):
    out = tmp_path / "mine"
    out.mkdir()
    first = export(out, data=raw_digits, force=True)  # an empty folder
    second = export(out, data=raw_digits, force=True, seed=1)  # a bundle
    assert load_bundle(out).manifest.manifest_sha256 == second.manifest.manifest_sha256
    assert second.manifest.manifest_sha256 != first.manifest.manifest_sha256
    assert no_staging_left(tmp_path) and not [entry for entry in tmp_path.iterdir() if ".replaced-" in entry.name]
    # A bundle with a file of the user's in it: the bundle is not replaced, the file stays.
    (out / "notes.md").write_text("mine", encoding="utf-8")
    with pytest.raises(PublishError, match=r"besides a model bundle it holds notes.md"):
        export(out, data=raw_digits, force=True)
    assert (out / "notes.md").read_text(encoding="utf-8") == "mine"
    assert load_bundle(out).manifest.manifest_sha256 == second.manifest.manifest_sha256


def test_without_force_an_existing_folder_is_refused_in_the_callers_words(tmp_path, raw_digits):
    out = tmp_path / "mine"
    out.mkdir()
    with pytest.raises(PublishError, match="already exists; pass force=True to replace it"):
        export(out, data=raw_digits)
    with pytest.raises(PublishError, match="already exists; pass --force to replace it"):
        check_destination(out, False)


def test_a_file_or_a_link_in_place_of_the_folder_is_refused(tmp_path, raw_digits):
    file = tmp_path / "model"
    file.write_text("not a folder", encoding="utf-8")
    with pytest.raises(PublishError, match="it is a file, not a folder"):
        export(file, data=raw_digits, force=True)
    assert file.read_text(encoding="utf-8") == "not a folder"
    link = tmp_path / "link"
    link.symlink_to(user_folder(tmp_path / "elsewhere"))
    with pytest.raises(PublishError, match="it is a symbolic link"):
        export(link, data=raw_digits, force=True)
    assert (tmp_path / "elsewhere" / "thesis.txt").is_file() and link.is_symlink()


def test_a_destination_whose_parent_cannot_be_written_is_refused_before_any_work(tmp_path, raw_digits):
    # Cases that fail for root as well (chmod does not stop root): a file where a folder must be,
    # and a name whose staging folder beside it would be longer than the file system allows.
    file = tmp_path / "file.txt"
    file.write_text("x", encoding="utf-8")
    with pytest.raises(PublishError, match=r"file.txt is a file, not a folder; choose another out"):
        export(file / "bundle", data=raw_digits)
    long_name = tmp_path / ("b" * 250)
    with pytest.raises(PublishError, match=r"a staging folder could not be created in .* \(File name too long\)"):
        export(long_name, data=raw_digits)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["file.txt"]


def test_publish_checks_the_destination_again_when_it_replaces(tmp_path, digits_bundle):
    # The folder was empty when the export began; the user saved a file into it while it trained.
    out = tmp_path / "out"
    out.mkdir()
    check_destination(out, True)
    (out / "thesis.txt").write_text("saved meanwhile", encoding="utf-8")
    staging = staging_dir_for(out)
    for entry in digits_bundle.iterdir():
        shutil.copy2(entry, staging / entry.name)
    with pytest.raises(PublishError, match=r"holds thesis\.txt"):
        publish(staging, out, True)
    assert (out / "thesis.txt").read_text(encoding="utf-8") == "saved meanwhile"
    shutil.rmtree(staging)


def test_calibrate_force_replaces_only_a_bundle(digits_bundle, tmp_path, capsys):
    out = user_folder(tmp_path / "thesis")
    code, err = vae_train(
        capsys, "calibrate", "--bundle", str(digits_bundle), "--dataset", "digits", "--out", str(out), "--force"
    )
    assert code == 2 and "not a model bundle" in err and "thesis.txt" in err and "Traceback" not in err
    assert (out / "thesis.txt").is_file() and no_staging_left(tmp_path)
    file = tmp_path / "file.txt"
    file.write_text("x", encoding="utf-8")
    code, err = vae_train(
        capsys, "calibrate", "--bundle", str(digits_bundle), "--dataset", "digits", "--out", str(file / "b")
    )
    assert code == 2 and "is a file, not a folder" in err
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    code, err = vae_train(
        capsys, "calibrate", "--bundle", str(digits_bundle), "--dataset", "digits", "--out", str(bundle), "--force"
    )
    assert code == 0, err
    assert load_bundle(bundle).manifest.calibration.replaces is not None and no_staging_left(tmp_path)


def test_export_triton_force_replaces_only_what_it_wrote(digits_bundle, tmp_path, capsys):
    repository = tmp_path / "triton"
    args = ("export-triton", "--bundle", str(digits_bundle), "--out", str(repository), "--version", "3")
    code, err = vae_train(capsys, *args)
    assert code == 0, err
    code, err = vae_train(capsys, *args, "--force")  # its own version directories: replaced
    assert code == 0, err
    # A file Triton export did not write, in one version directory: nothing is replaced.
    plan = repository / "digits-decoder" / "3" / "model.plan"
    plan.write_bytes(b"a TensorRT engine")
    encoder_model = (repository / "digits-encoder" / "3" / "model.onnx").stat().st_mtime_ns
    code, err = vae_train(capsys, *args, "--force")
    assert code == 2 and "digits-decoder/3" in err and "model.plan" in err and "Traceback" not in err
    assert plan.read_bytes() == b"a TensorRT engine"
    assert (repository / "digits-encoder" / "3" / "model.onnx").stat().st_mtime_ns == encoder_model
    plan.unlink()
    # A version directory of someone else's (no manifest.json): refused.
    (repository / "digits-encoder" / "3" / "manifest.json").unlink()
    code, err = vae_train(capsys, *args, "--force")
    assert code == 2 and "no manifest.json" in err and (repository / "digits-encoder" / "3" / "model.onnx").is_file()


def test_export_triton_never_replaces_a_config_it_did_not_write(digits_bundle, tmp_path, capsys):
    repository = tmp_path / "triton"
    (repository / "digits-encoder").mkdir(parents=True)
    config = repository / "digits-encoder" / "config.pbtxt"
    config.write_text('name: "digits-encoder"\nplatform: "tensorrt_plan"\n', encoding="utf-8")
    code, err = vae_train(capsys, "export-triton", "--bundle", str(digits_bundle), "--out", str(repository), "--force")
    assert code == 2 and "config.pbtxt" in err and "not written by vae-train export-triton" in err
    assert "tensorrt_plan" in config.read_text(encoding="utf-8")
    assert not (repository / "digits-encoder" / "1").exists() and not (repository / "digits-decoder").exists()
    # Its own config.pbtxt is replaced with each new version.
    config.unlink()
    for version in ("1", "2"):
        args = ("export-triton", "--bundle", str(digits_bundle), "--out", str(repository), "--version", version)
        code, err = vae_train(capsys, *args)
        assert code == 0, err
    assert "version 2" in config.read_text(encoding="utf-8")
