"""``--feature-std-floor`` (issue 23): a Gaussian's per-feature standardization floors each feature's
std at a fraction of the std of all training values, so that a pixel that never varies in training
does not weigh 1 / MIN_FEATURE_STD. Checked against numpy on the rows the run trained on, through
the real ``vae-train train`` and its bundle; and the flag's resolution, refusals and checkpoints."""

import numpy as np
import pytest
from PIL import Image

from tests.test_checkpoint import CONFIGS, assert_resumes_without_setting, digits  # noqa: F401  (a pytest fixture)
from tests.test_recipes import TINY, resolved, train
from vae_serve.core.bundle import load_bundle
from vae_serve.export.models.config import RECIPES
from vae_serve.export.models.training import MIN_FEATURE_STD, standardization
from vae_serve.export.sources import DataError, load_source, make_splits, recorded_split

FLOOR = 0.2


def expected_scale(train_x: np.ndarray, fraction: float) -> np.ndarray:
    """The floored std, computed here with numpy alone."""
    floor = max(fraction * float(np.std(train_x.astype(np.float64))), MIN_FEATURE_STD)
    return np.maximum(np.std(train_x.astype(np.float64), axis=0), floor)


def write_framed_folder(directory, count: int = 40) -> None:
    """Grey 8x8 images: random insides in a black frame, one frame pixel at 0 or 1 (std ~0.002 after / 255)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for index in range(count):
        pixels = np.zeros((8, 8), np.uint8)
        pixels[2:6, 2:6] = rng.integers(0, 256, size=(4, 4))
        pixels[0, 0] = index % 2
        Image.fromarray(pixels).save(directory / f"image_{index:02d}.png")


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 1.0])
def test_standardization_floors_each_std_at_the_fraction_of_the_overall_std(fraction):
    rng = np.random.default_rng(0)
    train_x = (rng.normal(size=(500, 6)) * np.array([0.0, 1e-4, 0.01, 0.1, 1.0, 3.0]) + 2.0).astype(np.float32)
    loc, scale = standardization(train_x, "gaussian", "standardized", fraction)
    np.testing.assert_allclose(scale.numpy(), expected_scale(train_x, fraction), rtol=1e-5)
    np.testing.assert_allclose(loc.numpy(), train_x.mean(0), rtol=1e-6)
    assert standardization(train_x, "bernoulli", "per-feature", fraction) == (None, None)


def test_the_recipe_gives_the_floor_to_a_gaussian_on_images_only():
    config, _ = resolved("--dataset", "fashion-mnist")
    assert config.feature_std_floor == RECIPES["images"]["feature_std_floor"]
    assert resolved("--dataset", "fashion-mnist", "--likelihood", "bernoulli")[0].feature_std_floor == 0.0
    assert resolved("--dataset", "csv:x.csv")[0].feature_std_floor == RECIPES["tables"]["feature_std_floor"] == 0.0
    assert resolved("--dataset", "csv:x.csv", "--feature-std-floor", "0.5")[0].feature_std_floor == 0.5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "fashion-mnist", "--feature-std-floor", "1.5"], "must be a fraction in [0, 1]"),
        (["--dataset", "fashion-mnist", "--feature-std-floor", "-0.1"], "must be a fraction in [0, 1]"),
        (["--dataset", "fashion-mnist", "--feature-std-floor", "nan"], "must be a fraction in [0, 1]"),
        (["--dataset", "digits", "--feature-std-floor", "0.1"], "applies to --likelihood gaussian only"),
    ],
)
def test_bad_floors_are_refused_with_the_reason(flags, message):
    with pytest.raises(DataError) as refused:
        resolved(*flags)
    assert message in str(refused.value)


def test_the_bundle_standardizes_with_the_floored_std_of_its_training_rows(tmp_path, capsys):
    folder = tmp_path / "framed"
    write_framed_folder(folder)
    out = tmp_path / "model"
    flags = ["--dataset", f"images:{folder}", "--validation-fraction", "0.3", "--out", str(out)]
    code, _, err = train(capsys, *flags, "--feature-std-floor", str(FLOOR), *TINY)
    assert code == 0, err
    manifest = load_bundle(out).manifest
    assert manifest.training["feature_std_floor"] == FLOOR
    # The rows it trained on, rebuilt from the split its manifest records, in the model's units.
    source = load_source(f"images:{folder}")
    rows = make_splits(source, **recorded_split(manifest.training["data"])).train.x.reshape(28, -1)
    model_x = (rows.astype(np.float64) - manifest.preprocessing.loc[0]) / manifest.preprocessing.scale[0]
    served_scale = np.asarray(manifest.likelihood.parameters["feature_scale"])
    np.testing.assert_allclose(served_scale, expected_scale(model_x, FLOOR), rtol=1e-5)
    # The frame pixel that is 0 or 1 would have weighed as std ~0.002; it now weighs as the floor.
    assert served_scale[0] == pytest.approx(FLOOR * model_x.std(), rel=1e-5)
    assert served_scale[0] > 20 * model_x[:, 0].std()


def test_a_checkpoint_without_the_setting_resumes_as_no_floor(tmp_path, digits):  # noqa: F811
    assert_resumes_without_setting(tmp_path, digits, "feature_std_floor", 0.1)
