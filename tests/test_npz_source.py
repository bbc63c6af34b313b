"""``npz:PATH``: one array of a numpy.savez archive, picked by ``--key``; each fault one plain line, exit 2.

Also the registry's contract: the source is one module and one line of ``SOURCES``, and the CLI's
help and the option checks come from it.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from tests.test_train_failures import FAST, assert_nothing_left, assert_one_plain_line, run_train
from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli
from vae_serve.export.sources import DataError, SourceOptions, load_source
from vae_serve.export.sources.registry import SOURCES

GAUSSIAN = ["--likelihood", "gaussian"]


def rows(count: int = 120, features: int = 4) -> np.ndarray:
    return np.random.default_rng(count).normal(size=(count, features)).astype(np.float32)


def forged_member(path: Path, declared_rows: int) -> Path:
    """An .npz whose only member's header declares ``declared_rows`` rows of 4 float32, and holds 4 values."""
    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (declared_rows, 4)})
    member.write(np.zeros(4, np.float32).tobytes())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    return path


def train(capsys, tmp_path: Path, *args: str) -> tuple[int, str]:
    return run_train(capsys, *args, *GAUSSIAN, "--out", str(tmp_path / "out"), *FAST)


def test_a_good_npz_trains_a_bundle_that_verifies(tmp_path, capsys):
    data = tmp_path / "records.npz"
    np.savez(data, x=rows())
    code = cli.main(["train", "--dataset", f"npz:{data}", *GAUSSIAN, "--out", str(tmp_path / "out"), *FAST])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    manifest = load_bundle(tmp_path / "out").manifest
    assert manifest.input.num_features == 4 and manifest.name == "records" and summary["name"] == "records"
    recorded = manifest.training["data"]
    assert recorded["source"] == "npz" and recorded["location"] == f"{data} [x]"


def test_key_picks_one_of_several_arrays_and_labels_select_classes(tmp_path):
    data = tmp_path / "both.npz"
    values = rows(200, 3)
    np.savez_compressed(data, features=values, other=np.ones((50, 2)))
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(200) % 2)
    source = load_source(f"npz:{data}", options=SourceOptions(key="features", labels=labels))
    np.testing.assert_array_equal(source.train.x, values)
    np.testing.assert_array_equal(source.train.y, np.arange(200) % 2)
    assert source.example_shape == (3,)


def test_the_training_recipe_is_the_tables_one():
    """npz: takes the defaults of npy: (200 epochs, patience 20), read from its registry line."""
    from vae_serve.export.models.config import RECIPES, recipe_for

    assert recipe_for("npz:any.npz") == recipe_for("npy:any.npy") == RECIPES["tables"]


def _faults(tmp_path: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    np.savez(tmp_path / "two.npz", x=rows(), y=np.arange(120))
    np.savez(tmp_path / "words.npz", x=np.array([["a", "b"]] * 20))
    np.savez(tmp_path / "empty.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "objects.npz", "w") as archive:
        archive.write(tmp_path / "objects.npy", "x.npy")
    (tmp_path / "objects.npy").unlink()
    forged_member(tmp_path / "forged.npz", 2**40)
    np.savez(tmp_path / "good.npz", x=rows())
    whole = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    flipped = bytearray(whole)
    flipped[len(whole) // 3] ^= 0xFF  # inside the member's data: the CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    npz = lambda name: ["--dataset", f"npz:{tmp_path / name}"]  # noqa: E731
    return {
        "several arrays, no --key": (npz("two.npz"), ("holds 2 arrays (x, y)", "--key NAME")),
        "missing key": ([*npz("two.npz"), "--key", "z"], ("has no array 'z'", "its arrays are x, y")),
        "no arrays": (npz("empty.npz"), ("holds no arrays",)),
        "text array": (npz("words.npz"), ("[x]: need a numeric array", "<U1")),
        "object array": (npz("objects.npz"), ("[x]: holds Python objects",)),
        "forged header": (npz("forged.npz"), ("header declares shape [1099511627776, 4]", "more data than")),
        "truncated archive": (npz("truncated.npz"), ("not a readable .npz file", "numpy.savez")),
        "not a zip": (npz("text.npz"), ("not a readable .npz file",)),
        "damaged member": (npz("flipped.npz"), ("not a readable .npz file",)),
        "no file": (npz("none.npz"), ("no such file",)),
        "key on npy": (["--dataset", f"npy:{tmp_path / 'x.npy'}", "--key", "x"], ("--key applies only to npz:PATH",)),
    }


FAULTS = (
    "several arrays, no --key",
    "missing key",
    "no arrays",
    "text array",
    "object array",
    "forged header",
    "truncated archive",
    "not a zip",
    "damaged member",
    "no file",
    "key on npy",
)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_npz_fault_is_one_plain_line_exit_2(tmp_path, capsys, fault):
    args, expected = _faults(tmp_path)[fault]
    before = sorted(path.name for path in tmp_path.iterdir())
    code, stderr = train(capsys, tmp_path, *args)
    assert code == 2, stderr
    assert_one_plain_line(stderr, *expected)
    assert len(stderr.strip().splitlines()) == 1 and "MemoryError" not in stderr
    assert_nothing_left(tmp_path, *before)


def test_the_registry_drives_the_help_the_checks_and_the_unknown_dataset_error(capsys):
    forms = [source.form for source in SOURCES]
    assert "npz:PATH" in forms and len(set(forms)) == len(forms)
    with pytest.raises(DataError) as error:
        load_source("mnist")
    assert all(form in str(error.value) for form in forms)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(form in help_text for form in forms)
    assert "--key KEY npz:PATH: the array to train on" in help_text
    assert "--labels LABELS npy:PATH and npz:PATH" in help_text
