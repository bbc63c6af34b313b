"""The deterministic train / validation / test split of a source's rows (``make_splits``), and
``--classes``.

Every source yields float32 rows [examples, features] (row-major flattening of each example) with
optional integer labels. Rows are raw values, as clients will send them to the server (0-255
pixels, table rows as stored); the source also names the preprocessing that maps them into the
model's space, which the bundle records and the server applies: ``Splits.in_model_space``.
"""

from dataclasses import dataclass

import numpy as np

from vae_serve.core.manifest import Preprocessing
from vae_serve.core.preprocessing import IDENTITY, Affine, to_model
from vae_serve.export.sources.base import DataError, Part, SourceData
from vae_serve.export.sources.split_plan import holds_test_rows, split_indices, too_few_validation_rows

__all__ = ["Splits", "make_splits", "parse_classes", "recorded_split"]


@dataclass(frozen=True)
class Splits:
    train: Part
    validation: Part
    test: Part
    example_shape: tuple[int, ...]
    value_range: tuple[float | None, float | None]
    description: dict
    preprocessing: Preprocessing = IDENTITY

    def in_model_space(self) -> "Splits":
        """The same splits with every row mapped through the preprocessing: what the model trains on."""
        affine = Affine.of(self.preprocessing)

        def mapped(part: Part) -> Part:
            return Part(to_model(affine, part.x).astype(np.float32), part.y)

        return Splits(
            mapped(self.train),
            mapped(self.validation),
            mapped(self.test),
            self.example_shape,
            self.value_range,
            self.description,
            self.preprocessing,
        )


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """``"3"`` or ``"0,3"`` -> (3,) or (0, 3)."""
    if text is None or text.strip() == "":
        return None
    try:
        return tuple(sorted({int(item) for item in text.split(",")}))
    except ValueError:
        raise DataError(f"--classes takes comma-separated integer labels, got {text!r}") from None


def _check_classes_present(source: SourceData, classes: tuple[int, ...]) -> None:
    """``--classes`` must name at least one label the data has."""
    if source.train.y is None:
        return  # _keep_classes says that labels are needed
    present = np.unique(source.train.y)
    if not np.isin(classes, present).any():
        shown = ", ".join(map(str, present[:20])) + (", ..." if len(present) > 20 else "")
        raise DataError(f"--classes {','.join(map(str, classes))} selects no rows: the labels in the data are {shown}")


def _keep_classes(part: Part, classes: tuple[int, ...], what: str) -> Part:
    if part.y is None:
        raise DataError(f"--classes needs labels, and the {what} data has none (npy: pass --labels)")
    return part.select(np.isin(part.y, classes))


def make_splits(
    source: SourceData,
    classes: tuple[int, ...] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    min_validation_rows: int = 1,
) -> Splits:
    """Deterministic split: a fixed permutation (``split_seed``) of the training rows gives the
    validation rows (and test rows, for sources without an official test split: ``test_fraction``
    of the rows; with 0 the test split is empty, and every row is a training or validation row).

    With ``classes``, every split keeps only those labels: the model, its early stopping, its
    calibration and its test metrics all describe the "normal" data.

    Raises:
        DataError: a split is empty (but the test split with ``test_fraction`` 0), or the validation
            split holds fewer than ``min_validation_rows`` rows (the message says how many rows, or which
            --validation-fraction, would be enough).
    """
    if classes is not None:
        _check_classes_present(source, classes)
    test_index, validation_index, train_index = split_indices(
        len(source.train), source.test is not None, validation_fraction, test_fraction, split_seed
    )
    test = source.test if test_index is None else source.train.select(test_index)
    validation = source.train.select(validation_index)
    train = source.train.select(train_index)
    if classes is not None:
        train = _keep_classes(train, classes, "training")
        validation = _keep_classes(validation, classes, "validation")
        test = _keep_classes(test, classes, "test")
    # Checked before the empty splits: its message says how many rows would be enough.
    too_few = too_few_validation_rows(
        source, classes, validation_fraction, test_fraction, split_seed, min_validation_rows
    )
    if min_validation_rows > 1 and too_few is not None:
        raise DataError(too_few)
    expects_test = holds_test_rows(source.test is not None, test_fraction)
    for name, part in (("training", train), ("validation", validation), ("test", test)):
        if len(part) == 0 and (name != "test" or expects_test):
            raise DataError(f"the {name} split is empty (classes={classes}); check --classes and the data")
    description = {
        **source.description,
        "classes": None if classes is None else list(classes),
        "split_seed": split_seed,
        "validation_fraction": validation_fraction,
        # Of the rows given; None: the source's own test split is the test split.
        "test_fraction": None if source.test is not None else test_fraction,
        "examples": {"train": len(train), "validation": len(validation), "test": len(test)},
    }
    return Splits(train, validation, test, source.example_shape, source.value_range, description, source.preprocessing)


def recorded_split(data_record: dict) -> dict:
    """``make_splits``' keyword arguments that replay a training run's split, from the record its
    manifest keeps (``training["data"]``): its validation fraction, test fraction and split seed.
    Bundles written before the record held the test fraction held out 0.2 (the old default); None
    means the source's own test split (no test rows taken from the training rows)."""
    return {
        "validation_fraction": data_record.get("validation_fraction", 0.1),
        "test_fraction": data_record.get("test_fraction", 0.2) or 0.0,
        "split_seed": data_record.get("split_seed", 0),
    }
