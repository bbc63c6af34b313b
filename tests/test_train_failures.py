"""vae-train fails early and plainly (issue 20, section 4): every fault a user can hit is one line on
stderr that says what to change, exit 2 (bad data, flags or destination), 130 (Ctrl-C) or 143 (SIGTERM), no
traceback, no library warning, and nothing left behind: no bundle, no staging or work folder, no
report folder, no parent folder the run created."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from numpy.lib import format as npy_format
from PIL import Image

from vae_serve.core.bundle import load_bundle
from vae_serve.export import cli
from vae_serve.export.bundle.calibration import MIN_CALIBRATION_ROWS
from vae_serve.export.sources import SourceOptions, load_source, make_splits
from vae_serve.export.sources.split_plan import split_sizes

FAST = ["--epochs", "2", "--iwae-k", "5", "--no-progress"]
VAE_TRAIN = str(Path(sys.executable).with_name("vae-train"))
# vae-train in a fresh interpreter that sends itself a real SIGINT (Ctrl-C) on the Nth call of the
# function named in argv[1] ("NAME:N"): the interrupt lands at a known step of the run, not at a guessed time.
# Every vae_serve.export module is imported first and each binding of that name is wrapped, so a call
# through any of them counts; a profile hook (sys.setprofile) would find the call as surely, but runs
# Python code on every call the whole run makes, which made each of these tests take ~18 s.
INTERRUPT_AT = """
import functools, importlib, os, pkgutil, signal, sys, types

# A runner that starts its jobs in the background (`cmd &` without job control) hands them SIGINT
# ignored; the Ctrl-C under test needs Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
import vae_serve.export

target, _, nth = sys.argv[1].partition(":")
calls = []
for info in pkgutil.walk_packages(vae_serve.export.__path__, "vae_serve.export."):
    importlib.import_module(info.name)


def interrupting(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        calls.append(target)
        if len(calls) == int(nth or 1):
            os.kill(os.getpid(), signal.SIGINT)
        return function(*args, **kwargs)

    return wrapper


wrapped = 0
for module in list(sys.modules.values()):
    function = getattr(module, "__dict__", {}).get(target)
    if getattr(module, "__name__", "").startswith("vae_serve.") and isinstance(function, types.FunctionType):
        module.__dict__[target] = interrupting(function)
        wrapped += 1
assert wrapped, f"no vae_serve.export function is named {target!r}"
from vae_serve.export.cli import main

sys.exit(main(sys.argv[2:]))
"""


def write_csv(path: Path, rows: int, columns: int = 3, labels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(rows).normal(size=(rows, columns))
    header = [f"f{index}" for index in range(columns)] + ([] if labels is None else ["label"])
    lines = [",".join(f"{value:.5f}" for value in row) for row in values]
    if labels is not None:
        lines = [f"{line},{label}" for line, label in zip(lines, labels, strict=True)]
    path.write_text("\n".join([",".join(header), *lines]) + "\n")
    return path


def write_pngs(folder: Path, count: int, side_px: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for index in range(count):
        pixels = rng.integers(0, 255, size=(side_px, side_px)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{index:03d}.png")
    return folder


def png_header_only(path: Path, width_px: int, height_px: int) -> Path:
    """A PNG whose header declares ``width_px`` x ``height_px`` grey pixels (its data is not there):
    what Pillow's decompression-bomb check looks at, written in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width_px, height_px, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")))
    return path


def forged_npy(path: Path, rows: int) -> Path:
    """A .npy whose header declares ``rows`` rows of 4 float32 values, and no data."""
    with open(path, "wb") as stream:
        npy_format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (rows, 4)})
    return path


def run_train(capsys, *args: str) -> tuple[int, str]:
    """``vae-train train ARGS`` in-process; (exit code, stderr)."""
    code = cli.main(["train", *args])
    return code, capsys.readouterr().err


def assert_one_plain_line(stderr: str, *expected: str) -> str:
    """The error is the last line, it says ``expected``, and nothing on stderr is a traceback, a
    warning or a library path; returns the line."""
    assert "Traceback" not in stderr and "Warning" not in stderr and "site-packages" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("vae-train train: "), stderr
    for text in expected:
        assert text in line, line
    return line


def assert_nothing_left(folder: Path, *kept: str) -> None:
    """``folder`` holds only the ``kept`` entries: no bundle, work, staging or report folder."""
    assert sorted(entry.name for entry in folder.iterdir()) == sorted(kept)


def test_a_60_row_csv_is_refused_before_training_with_the_rows_and_fraction_that_would_do(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", 60)
    out = tmp_path / "repo" / "t" / "1"
    # A fifth of the rows held out as test rows, as make_splits' default (vae-train keeps none by default).
    held_out = ["--test-fraction", "0.2"]
    code, stderr = run_train(capsys, "--dataset", f"csv:{data}", *held_out, "--out", str(out), *FAST)
    assert code == 2
    line = assert_one_plain_line(stderr, "60 rows give 5 validation rows", f"at least {MIN_CALIBRATION_ROWS}")
    assert "provide at least 119 rows" in line and "raise --validation-fraction to 0.2" in line
    assert "epoch" not in stderr  # refused before training
    assert_nothing_left(tmp_path, "t.csv")


def test_the_numbers_in_the_advice_are_exactly_enough(tmp_path):
    """The rows and the fraction the refusal above names are enough, one row fewer or the next smaller
    fraction is not: replayed through make_splits itself."""
    for rows, enough in ((118, False), (119, True)):
        source = load_source(f"csv:{write_csv(tmp_path / f'{rows}.csv', rows)}")
        assert (len(make_splits(source).validation) >= MIN_CALIBRATION_ROWS) == enough
    source = load_source(f"csv:{write_csv(tmp_path / '60.csv', 60)}")
    for fraction, enough in ((0.19, False), (0.2, True)):
        validation = make_splits(source, validation_fraction=fraction).validation
        assert (len(validation) >= MIN_CALIBRATION_ROWS) == enough
        assert split_sizes(source, None, fraction, 0.2, 0)["validation"] == len(validation)


def test_20_pngs_are_refused_before_training(tmp_path, capsys):
    folder = write_pngs(tmp_path / "pngs", 20)
    out = tmp_path / "out"
    code, stderr = run_train(
        capsys, "--dataset", f"images:{folder}", "--test-fraction", "0.2", "--out", str(out), *FAST
    )
    assert code == 2
    assert_one_plain_line(stderr, "20 rows give 2 validation rows", "provide at least 119 rows")
    assert "epoch" not in stderr
    assert_nothing_left(tmp_path, "pngs")


def test_classes_that_leave_too_few_validation_rows_name_the_fraction_that_would_do(tmp_path, capsys):
    labels = np.arange(300) % 3  # a third of the rows are class 0: 24 test, 8 validation of them
    data = write_csv(tmp_path / "t.csv", 300, labels=labels)
    source = load_source(f"csv:{data}", options=SourceOptions(label_column="label"))
    fraction = next(
        step / 100
        for step in range(11, 51)
        if split_sizes(source, (0,), step / 100, 0.2, 0)["validation"] >= MIN_CALIBRATION_ROWS
    )
    args = ["--dataset", f"csv:{data}", "--label-column", "label", "--classes", "0", "--test-fraction", "0.2"]
    code, stderr = run_train(capsys, *args, "--out", str(tmp_path / "out"), *FAST)
    assert code == 2
    validation = split_sizes(source, (0,), 0.1, 0.2, 0)["validation"]
    assert validation < MIN_CALIBRATION_ROWS
    assert_one_plain_line(
        stderr,
        f"--classes 0 keeps 100 of 300 rows, which give {validation} validation rows",
        f"raise --validation-fraction to {fraction:g}",
    )
    assert "epoch" not in stderr
    assert_nothing_left(tmp_path, "t.csv")


def test_a_npy_whose_header_declares_2_to_the_40_rows_is_refused_by_name(tmp_path, capsys):
    data = forged_npy(tmp_path / "forged.npy", 2**40)
    code, stderr = run_train(capsys, "--dataset", f"npy:{data}", "--out", str(tmp_path / "out"), *FAST)
    assert code == 2
    assert_one_plain_line(stderr, str(data), "header declares shape [1099511627776, 4]", "more data than the file")
    assert "MemoryError" not in stderr
    assert_nothing_left(tmp_path, "forged.npy")


@pytest.mark.parametrize(("width_px", "refused"), [(12000, "12000x12000 pixels"), (14000, "more than")])
def test_a_decompression_bomb_png_is_refused_without_pillow_s_warning(tmp_path, width_px, refused):
    """12000 x 12000 is over Pillow's warning limit, 14000 x 14000 over its error limit: both are one
    line from vae-train, run as a user runs it (a fresh process, Python's default warning filters)."""
    folder = write_pngs(tmp_path / "pngs", 30)
    png_header_only(folder / "huge.png", width_px, width_px)
    command = [str(Path(sys.executable).with_name("vae-train")), "train", "--dataset", f"images:{folder}"]
    result = subprocess.run([*command, "--out", str(tmp_path / "out"), *FAST], capture_output=True, text=True)
    assert result.returncode == 2
    assert_one_plain_line(result.stderr, "huge.png", refused, "89,478,485", "shrink the image")
    assert len(result.stderr.strip().splitlines()) == 1
    assert_nothing_left(tmp_path, "pngs")


def test_a_data_dependent_branch_is_one_export_error_without_the_fx_graph(tmp_path):
    """The exporter prints the FX graph and logs guard warnings when tracing fails; only the
    ExportError reaches the user."""
    script = f"""
import numpy as np, torch
from torch import nn
from vae_serve.export.bundle.exporter import export_bundle
from vae_serve.export.bundle.onnx_export import ExportError


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        h = self.linear(x)
        if h.sum() > 0:  # data-dependent Python control flow: does not export
            h = h * 2
        return h[:, :2], h[:, 2:]


# Seeded: with h.sum() over the batch, some weights make the rows depend on each other, which the
# row-independence check refuses (ModelError) before the export is tried.
torch.manual_seed(0)
x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
try:
    export_bundle(Encoder(), nn.Linear(2, 4), likelihood="bernoulli", input_shape=(4,), calibration_data=x,
                  out={str(tmp_path / "out")!r}, name="branch")
except ExportError as error:
    print(f"ExportError: {{error}}")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ExportError: the encoder does not export to ONNX"), lines
    assert "data-dependent" in lines[0]
    assert_nothing_left(tmp_path)


def _interrupted(tmp_path: Path, target: str, data: Path) -> subprocess.CompletedProcess:
    out = tmp_path / "repo" / "model" / "1"
    args = ["train", "--dataset", f"csv:{data}", "--likelihood", "gaussian", "--out", str(out), *FAST]
    return subprocess.run(
        [sys.executable, "-c", INTERRUPT_AT, target, *args], capture_output=True, text=True, timeout=300
    )


# Loading, training, exporting, calibrating, publishing into the work folder, drawing the report.
STEPS = ["load_source", "train_vae", "export_graphs", "calibrate", "replace_dir:1", "write_report"]


@pytest.mark.parametrize("target", STEPS)
def test_ctrl_c_at_any_step_is_one_line_exit_130_and_leaves_nothing(tmp_path, target):
    data = write_csv(tmp_path / "data" / "t.csv", 200)
    result = _interrupted(tmp_path, target, data)
    assert result.returncode == 130, result.stderr
    line = assert_one_plain_line(result.stderr, "interrupted (Ctrl-C)")
    assert "KeyboardInterrupt" not in result.stderr and result.stdout == ""
    assert line == "vae-train train: interrupted (Ctrl-C); nothing was published"
    assert_nothing_left(tmp_path, "data")  # not even repo/model/, which the run created


def test_ctrl_c_while_publishing_completes_the_publish(tmp_path):
    """The final renames ignore Ctrl-C: a bundle and its report are either both there or neither.
    (replace_dir's first call publishes into the work folder; the second moves the report into place.)"""
    data = write_csv(tmp_path / "data" / "t.csv", 200)
    result = _interrupted(tmp_path, "replace_dir:2", data)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "repo" / "model"
    assert sorted(entry.name for entry in folder.iterdir()) == ["1", "1-report"]
    assert load_bundle(folder / "1").manifest.name == "model"


def test_sigterm_is_one_line_exit_143_leaves_the_checkpoint_only_and_it_resumes(tmp_path):
    """kill, docker stop and Kubernetes stop a long training with SIGTERM: the run cleans up as for
    Ctrl-C (no work folder, no parent folders it made), keeps the checkpoint, and --resume goes on."""
    data = write_csv(tmp_path / "data" / "t.csv", 200)
    out, checkpoint = tmp_path / "repo" / "model" / "1", tmp_path / "run.ckpt"
    args = ["train", "--dataset", f"csv:{data}", "--out", str(out), "--checkpoint", str(checkpoint), "--no-progress"]
    process = subprocess.Popen(
        [VAE_TRAIN, *args, "--epochs", "5000", "--patience", "5000"], stderr=subprocess.PIPE, text=True
    )
    try:
        lines = []
        for line in process.stderr:  # "epoch 2: ..." comes after the epoch-1 checkpoint
            lines.append(line)
            if line.startswith("epoch 2:"):
                break
        process.terminate()
        lines += process.stderr.readlines()
    finally:
        process.wait(timeout=120)
        process.stderr.close()
    stderr = "".join(lines)
    assert process.returncode == 143, stderr
    assert assert_one_plain_line(stderr) == "vae-train train: stopped (SIGTERM); nothing was published"
    assert "KeyboardInterrupt" not in stderr and "Terminated" not in stderr
    assert_nothing_left(tmp_path, "data", "run.ckpt")  # not even repo/model/, which the run created
    reached = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= reached < 5000
    resumed = subprocess.run(
        [VAE_TRAIN, *args, "--epochs", str(reached + 1), "--patience", "5000", "--resume", "--iwae-k", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    history = load_bundle(out).manifest.training["history"]
    assert [entry["epoch"] for entry in history] == list(range(1, reached + 2))


def test_a_report_folder_holding_the_user_s_files_is_refused_before_training(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", 200)
    report = tmp_path / "out-report"
    report.mkdir()
    (report / "notes.txt").write_text("mine")
    code, stderr = run_train(
        capsys, "--dataset", f"csv:{data}", "--likelihood", "gaussian", "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert_one_plain_line(stderr, "out-report", "notes.txt")
    assert "epoch" not in stderr
    assert (report / "notes.txt").read_text() == "mine"
    assert_nothing_left(tmp_path, "t.csv", "out-report")


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Faults a user hits, each as (vae-train train arguments, text the one line must hold)."""
    data = write_csv(tmp_path / "ok.csv", 200, labels=np.arange(200) % 2)
    pngs = write_pngs(tmp_path / "pngs", 40)
    mixed = write_pngs(tmp_path / "mixed", 40)
    (mixed / "notes.png").write_text("not an image")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    (tmp_path / "words.csv").write_text("a,b\n" + "".join(f"{index},x{index}\n" for index in range(40)))
    (tmp_path / "text.npy").write_text("1,2,3\n")
    (tmp_path / "afile").write_text("")
    (tmp_path / "empty_dir").mkdir()
    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))
    pq.write_table(pa.table({"a": np.arange(50.0), "b": np.ones(50)}), tmp_path / "small.parquet")
    gaussian = ["--likelihood", "gaussian"]
    return {
        "small npy": (["--dataset", f"npy:{tmp_path / 'small.npy'}", *gaussian], "30 rows give 3 validation rows"),
        "small parquet": (
            ["--dataset", f"parquet:{tmp_path / 'small.parquet'}", *gaussian],
            "50 rows give 5 validation rows",
        ),
        "no data dir": (["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "none")], "no such directory"),
        "data dir for digits": (["--data-dir", str(tmp_path)], "--data-dir applies only to"),
        "no csv": (["--dataset", f"csv:{tmp_path / 'none.csv'}", *gaussian], "no such file"),
        "empty csv": (["--dataset", f"csv:{tmp_path / 'empty.csv'}", *gaussian], "cannot be read as CSV"),
        "header only": (["--dataset", f"csv:{tmp_path / 'header.csv'}", *gaussian], "0 data rows"),
        "text column": (["--dataset", f"csv:{tmp_path / 'words.csv'}", *gaussian], "'x0' is not a number"),
        "not an image": (["--dataset", f"images:{mixed}"], "notes.png: cannot be read as PNG or JPEG"),
        "no images": (["--dataset", f"images:{tmp_path / 'empty_dir'}"], "holds 0 images"),
        "not npy": (["--dataset", f"npy:{tmp_path / 'text.npy'}"], "not a .npy file"),
        "npy folder": (["--dataset", f"npy:{tmp_path / 'empty_dir'}"], "a folder, not a .npy file"),
        "classes select nothing": (
            ["--dataset", f"csv:{data}", "--label-column", "label", "--classes", "7", *gaussian],
            "--classes 7 selects no rows: the labels in the data are 0, 1",
        ),
        "classes without labels": (["--dataset", f"csv:{data}", "--classes", "1", *gaussian], "needs labels"),
        "bernoulli on a table": (
            ["--dataset", f"csv:{data}", "--likelihood", "bernoulli"],
            "use --likelihood gaussian",
        ),
        "conv on a table": (["--dataset", f"csv:{data}", "--arch", "conv", *gaussian], "conv"),
        "labels for images": (["--dataset", f"images:{pngs}", "--labels", str(data)], "--labels applies only"),
        "unknown dataset": (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        "out under a file": (["--dataset", f"csv:{data}", *gaussian, "--out", str(tmp_path / "afile" / "b")], "afile"),
        "out not writable": (
            ["--dataset", f"csv:{data}", *gaussian, "--out", "/proc/vae-serve-test/1"],
            "cannot write",
        ),
        "out exists": (["--dataset", f"csv:{data}", *gaussian, "--out", str(tmp_path / "empty_dir")], "--force"),
        "out is a file": (["--dataset", f"csv:{data}", *gaussian, "--out", str(tmp_path / "afile"), "--force"], "file"),
        "user's folder with force": (
            ["--dataset", f"csv:{data}", *gaussian, "--out", str(tmp_path / "pngs"), "--force"],
            "refusing to replace",
        ),
    }


FAULTS = (
    "small npy",
    "small parquet",
    "no data dir",
    "data dir for digits",
    "no csv",
    "empty csv",
    "header only",
    "text column",
    "not an image",
    "no images",
    "not npy",
    "npy folder",
    "classes select nothing",
    "classes without labels",
    "bernoulli on a table",
    "conv on a table",
    "labels for images",
    "unknown dataset",
    "out under a file",
    "out not writable",
    "out exists",
    "out is a file",
    "user's folder with force",
)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_one_plain_line_exit_2_before_training(tmp_path, capsys, fault):
    args, expected = _bad_inputs(tmp_path)[fault]
    before = sorted(path.name for path in tmp_path.rglob("*"))
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "new" / "out")]
    code, stderr = run_train(capsys, *args, *FAST)
    assert code == 2, stderr
    assert_one_plain_line(stderr, expected)
    assert len(stderr.strip().splitlines()) == 1 and "epoch" not in stderr
    assert sorted(path.name for path in tmp_path.rglob("*")) == before  # nothing written, nothing removed


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan", "a tenth"])
def test_a_validation_fraction_outside_0_1_is_a_usage_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "--out", str(tmp_path / "out"), "--validation-fraction", value])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "--validation-fraction: takes a number between 0 and 1" in stderr and "Traceback" not in stderr
    assert_nothing_left(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
@pytest.mark.parametrize("kind", ["csv", "png", "npy"])
def test_an_unreadable_file_is_one_plain_line(tmp_path, capsys, kind):
    if kind == "csv":
        target = write_csv(tmp_path / "t.csv", 200)
        dataset = f"csv:{target}"
    elif kind == "png":
        target = write_pngs(tmp_path / "pngs", 40) / "000.png"
        dataset = f"images:{target.parent}"
    else:
        target = tmp_path / "t.npy"
        np.save(target, np.zeros((200, 3), np.float32))
        dataset = f"npy:{target}"
    target.chmod(0)
    code, stderr = run_train(capsys, "--dataset", dataset, "--likelihood", "gaussian", "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_plain_line(stderr, target.name)
    assert not (tmp_path / "o").exists()


def test_calibrate_on_too_few_rows_is_refused_before_any_work(tmp_path, capsys, digits_bundle):
    # vae-train calibrate's --split rows are checked up front, with the flag that gives more rows.
    np.save(tmp_path / "few.npy", np.full((30, 64), 8.0, np.float32))
    out = tmp_path / "repo" / "recalibrated"
    code = cli.main(["calibrate", "--bundle", str(digits_bundle), "--dataset", f"npy:{tmp_path / 'few.npy'}"])
    code_out = cli.main(
        ["calibrate", "--bundle", str(digits_bundle), "--dataset", f"npy:{tmp_path / 'few.npy'}", "--out", str(out)]
    )
    stderr = capsys.readouterr().err
    assert code == code_out == 2, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("vae-train calibrate: error: "), stderr
    assert f"calibration needs at least {MIN_CALIBRATION_ROWS}" in line and "--split all" in line, line
    assert not out.exists() and not (tmp_path / "repo").exists()
