"""``vae-train train``'s defaults by kind of data (the recipes), ``--score``, ``--test-fraction`` (every
row used by default) and ``--checkpoint`` / ``--resume``: resolved from the real parser, and real
runs on tiny tables and images."""

import json
import re

import numpy as np
import pytest

from tests.test_data import write_idx
from tests.test_file_sources import write_grey_folder
from vae_serve.core.bundle import load_bundle
from vae_serve.core.scores import SCORES
from vae_serve.export import cli
from vae_serve.export.commands.report import rows_title
from vae_serve.export.models.config import RECIPES, resolve_config, resolve_scoring
from vae_serve.export.sources import DataError, Part, SourceData, make_splits
from vae_serve.export.sources.registry import SOURCES
from vae_serve.export.sources.split_plan import too_few_validation_rows

TINY = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--iwae-k", "10", "--no-progress"]
TABLE_ROWS = 250


def resolved(*flags: str):
    """The config and scoring that ``vae-train train`` resolves from these flags (the real parser)."""
    args = cli.build_parser().parse_args(["train", "--out", "unused", *flags])
    config = resolve_config(args)
    return config, resolve_scoring(args, config)


def train(capsys, *flags: str) -> tuple[int, dict | None, str]:
    """Run ``vae-train train`` in-process: (exit code, its JSON summary or None, stderr)."""
    code = cli.main(["train", *flags])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else None, captured.err


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    """250 rows of 5 columns in very different units (as the breast-cancer table's areas and ratios)."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(TABLE_ROWS, 5)) * np.array([0.1, 1.0, 10.0, 100.0, 1000.0]) + 50.0
    path = tmp_path_factory.mktemp("table") / "table.csv"
    np.savetxt(path, values, delimiter=",", header="a,b,c,d,e", comments="", fmt="%.6f")
    return path


@pytest.mark.parametrize(
    ("dataset", "likelihood", "decoder_scale", "score", "units"),
    [
        ("digits", "bernoulli", "per-feature", "reconstruction_error", "model"),
        ("fashion-mnist", "gaussian", "standardized", "pathway", "model"),
        ("idx:folder", "gaussian", "standardized", "pathway", "model"),
        ("images:folder", "gaussian", "standardized", "pathway", "model"),
        ("npy:x.npy", "gaussian", "per-feature", "negative_elbo", "standardized"),
        ("npz:x.npz", "gaussian", "per-feature", "negative_elbo", "standardized"),
        ("csv:x.csv", "gaussian", "per-feature", "negative_elbo", "standardized"),
        ("parquet:x.parquet", "gaussian", "per-feature", "negative_elbo", "standardized"),
    ],
)
def test_defaults_by_kind_of_data(dataset, likelihood, decoder_scale, score, units):
    config, scoring = resolved("--dataset", dataset)
    assert (config.likelihood, config.decoder_scale) == (likelihood, decoder_scale)
    assert (scoring.default_score, scoring.reconstruction_units) == (score, units)
    assert config.binarize == ("dynamic" if likelihood == "bernoulli" else "none")


def test_every_source_has_a_recipe_whose_score_is_a_registry_score():
    assert {source.recipe for source in SOURCES} == set(RECIPES)
    assert all(recipe["score"] in SCORES for recipe in RECIPES.values())


def test_flags_override_the_recipe():
    # A Bernoulli on images: the images recipe's decoder scale does not apply, and is no conflict.
    config, scoring = resolved("--dataset", "fashion-mnist", "--likelihood", "bernoulli")
    assert (config.likelihood, config.binarize, scoring.default_score) == ("bernoulli", "dynamic", "pathway")
    # A conv encoder's pathway was never measured: its default stays the bound, unless --score says otherwise.
    assert resolved("--dataset", "fashion-mnist", "--arch", "conv")[1].default_score == "negative_elbo"
    assert resolved("--dataset", "fashion-mnist", "--arch", "conv", "--score", "pathway")[1].default_score == "pathway"
    config, scoring = resolved("--dataset", "csv:x.csv", "--decoder-scale", "shared", "--score", "negative_elbo")
    assert (config.decoder_scale, scoring.default_score, scoring.reconstruction_units) == (
        "shared",
        "negative_elbo",
        "standardized",
    )
    # Errors in standardized units need the Gaussian's feature scales: a Bernoulli table keeps the model's.
    _, scoring = resolved("--dataset", "csv:x.csv", "--likelihood", "bernoulli")
    assert scoring.reconstruction_units == "model"
    config, _ = resolved("--dataset", "digits", "--likelihood", "gaussian")
    assert config.decoder_scale == "per-feature"


def test_decoder_scale_without_a_gaussian_is_refused_with_the_reason():
    with pytest.raises(
        DataError, match=r"--decoder-scale applies to --likelihood gaussian only \(.*add --likelihood gaussian\)"
    ):
        resolved("--dataset", "digits", "--decoder-scale", "shared")
    with pytest.raises(DataError, match=r"--decoder-scale applies to --likelihood gaussian only$"):
        resolved("--dataset", "fashion-mnist", "--likelihood", "bernoulli", "--decoder-scale", "standardized")


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--test-fraction", "1.5"], "--test-fraction"),
        (["--test-fraction", "-0.1"], "--test-fraction"),
        (["--test-fraction", "a fifth"], "--test-fraction"),
        (["--score", "nonsense"], "--score"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(tmp_path, capsys, flags, flag):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_test_fraction_is_refused_for_data_with_its_own_test_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for stem, rows in (("train", 40), ("t10k", 12)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, size=(rows, 4, 4)), compress=False)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", np.arange(rows) % 2, compress=False)
    code, _, err = train(capsys, "--dataset", f"idx:{tmp_path}", "--test-fraction", "0.2", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "--test-fraction applies only to data without a test split of its own" in err and "(12 rows)" in err


def test_a_table_trains_on_every_row_but_the_validation_rows(tmp_path, capsys, table_csv):
    out = tmp_path / "models" / "table"
    code, summary, err = train(capsys, "--dataset", f"csv:{table_csv}", "--out", str(out), "--checkpoint", *TINY)
    assert code == 0, err
    rows = summary["rows"]
    assert rows["train"] + rows["validation"] == TABLE_ROWS and rows["test"] == 0 and rows["validation"] == 25
    assert summary["test_iwae_nll_nats"] is None and summary["default_score"] == "negative_elbo"
    manifest = load_bundle(out).manifest
    assert manifest.metrics.test is None
    assert manifest.default_score == "negative_elbo" and manifest.reconstruction_units == "standardized"
    assert manifest.training["data"]["examples"] == rows and manifest.training["data"]["test_fraction"] == 0.0
    # The recipe the defaults came from, beside the resolved values.
    recipe = manifest.training["recipe"]
    assert recipe["kind"] == "tables" and recipe["score"] == "negative_elbo"
    assert recipe["reconstruction_units"] == "standardized" and recipe["decoder_scale"] == "per-feature"
    assert manifest.training["likelihood"] == "gaussian" and manifest.training["decoder_scale"] == "per-feature"
    # The default checkpoint (--checkpoint alone) is removed once the bundle is published; nothing else is left.
    assert sorted(path.name for path in out.parent.iterdir()) == ["table", "table-report"]
    assert (out.parent / "table-report" / "training.png").is_file()
    assert rows_title(rows) == "rows: train 225, validation 25, test 0"
    # verify reports the missing test metrics as null, not a traceback.
    assert cli.main(["verify", "--bundle", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["test"] is None
    # vae-train calibrate --split validation replays the run's split (no test rows): the very 25
    # validation rows, never rows the model trained on (the old default split held out 20 % as test).
    again = tmp_path / "models" / "table-2"
    args = ["calibrate", "--bundle", str(out), "--dataset", f"csv:{table_csv}", "--split", "validation"]
    assert cli.main([*args, "--out", str(again), "--no-progress"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["calibration_examples"] == 25
    original = manifest.calibration.scores["reconstruction_error"].quantiles
    assert load_bundle(again).manifest.calibration.scores["reconstruction_error"].quantiles == original


def test_test_fraction_keeps_test_rows_and_a_checkpoint_resumes(tmp_path, capsys, table_csv):
    checkpoint = tmp_path / "run.pt"
    flags = ["--dataset", f"csv:{table_csv}", "--test-fraction", "0.2", "--score", "negative_elbo", *TINY]
    code, first, err = train(capsys, *flags, "--out", str(tmp_path / "first"), "--checkpoint", str(checkpoint))
    assert code == 0, err
    assert first["rows"] == {"train": 180, "validation": 20, "test": 50}
    manifest = load_bundle(tmp_path / "first").manifest
    assert manifest.metrics.test.num_examples == 50 and first["test_elbo_nats"] == manifest.metrics.test.elbo_nats
    assert manifest.default_score == "negative_elbo"
    assert checkpoint.is_file(), "a checkpoint the user named is theirs: kept"

    code, _, err = train(
        capsys, *flags, "--epochs", "3", "--out", str(tmp_path / "second"), "--checkpoint", str(checkpoint), "--resume"
    )
    assert code == 0, err
    history = load_bundle(tmp_path / "second").manifest.training["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    # The first two epochs are the first run's, not retrained.
    first_history = manifest.training["history"]
    assert [entry["train_elbo_nats"] for entry in history[:2]] == [e["train_elbo_nats"] for e in first_history]


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys, table_csv):
    out = tmp_path / "table"
    code, _, err = train(capsys, "--dataset", f"csv:{table_csv}", "--out", str(out), "--resume", *TINY)
    assert code == 2
    assert "no checkpoint at" in err and "table.checkpoint.pt" in err and "Traceback" not in err
    assert not out.exists()


def test_grey_images_take_the_images_recipe(tmp_path, capsys):
    write_grey_folder(tmp_path / "images", count=40)
    out = tmp_path / "images-model"
    code, summary, err = train(
        capsys, "--dataset", f"images:{tmp_path / 'images'}", "--validation-fraction", "0.3", "--out", str(out), *TINY
    )
    assert code == 0, err
    assert summary["rows"] == {"train": 28, "validation": 12, "test": 0}
    manifest = load_bundle(out).manifest
    assert (manifest.likelihood.name, manifest.training["decoder_scale"]) == ("gaussian", "standardized")
    assert manifest.default_score == "pathway" and manifest.reconstruction_units == "model"
    assert manifest.training["recipe"]["kind"] == "images"


def rows_source(rows: int) -> SourceData:
    """``rows`` rows of 3 features, no labels and no test split of its own (as a csv table)."""
    return SourceData(Part(np.zeros((rows, 3), np.float32), None), None, (3,), (None, None), {})


def validation_rows(rows: int, fraction: float) -> int:
    return len(make_splits(rows_source(rows), validation_fraction=fraction, test_fraction=0.0).validation)


def test_too_few_validation_rows_advice_holds_without_test_rows():
    advice = too_few_validation_rows(rows_source(60), None, 0.1, 0.0, 0, 10)
    assert advice.startswith("60 rows give 6 validation rows")
    needed = int(re.search(r"at least (\d+) rows", advice).group(1))
    fraction = float(re.search(r"--validation-fraction to ([0-9.]+)", advice).group(1))
    # Each suggestion is enough, and the least that is (no test rows are taken: test_fraction 0).
    assert validation_rows(needed, 0.1) >= 10 > validation_rows(needed - 1, 0.1)
    assert validation_rows(60, fraction) >= 10 > validation_rows(60, round(fraction - 0.01, 2))
    with pytest.raises(DataError, match="calibration needs at least 10"):
        make_splits(rows_source(needed - 1), test_fraction=0.0, min_validation_rows=10)
