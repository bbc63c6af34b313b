"""Which rows go to each split, and the check, made before training, that the validation split holds
the rows calibration needs.

``split_indices`` is the one place the split arithmetic lives: ``data.make_splits`` cuts the rows
with it, and ``too_few_validation_rows`` replays it (counts only, no copies of the data) to say
exactly how many rows, or which ``--validation-fraction``, would give enough validation rows.
"""

import math

import numpy as np

from vae_serve.export.sources.base import SourceData

# The largest --validation-fraction the advice suggests: above it, more rows are the better fix
# (a model trained on less than half the rows is rarely what the user wants).
MAX_SUGGESTED_FRACTION = 0.5
FRACTION_STEP = 0.01
FRACTION_FLAG = "--validation-fraction"


def split_counts(num_rows: int, has_test: bool, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test rows taken from the training part, validation rows) for ``num_rows`` rows: the split's arithmetic.

    Args:
        num_rows: rows of the source's training part.
        has_test: the source has its own test split (then no test rows are taken here).
        validation_fraction: share of the rows left after the test rows that become validation rows.
        test_fraction: share of all rows that become test rows (when ``has_test`` is false).
    """
    test_count = 0 if has_test else round(test_fraction * num_rows)
    return test_count, round(validation_fraction * (num_rows - test_count))


def split_indices(
    num_rows: int, has_test: bool, validation_fraction: float, test_fraction: float, split_seed: int
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The row indices of each split: a fixed permutation (``split_seed``) of the training rows gives
    the test rows first (only when the source has no official test split), then the validation rows.

    Args:
        num_rows, has_test, validation_fraction, test_fraction: as ``split_counts``.
        split_seed: seed of the permutation.

    Returns:
        (test indices or None, validation indices, training indices in ascending order).
    """
    test_count, validation_count = split_counts(num_rows, has_test, validation_fraction, test_fraction)
    order = np.random.default_rng(split_seed).permutation(num_rows)
    test = None if has_test else order[:test_count]
    order = order[test_count:]
    return test, order[:validation_count], np.sort(order[validation_count:])


def split_sizes(
    source: SourceData,
    classes: tuple[int, ...] | None,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> dict[str, int]:
    """Rows of each split that ``make_splits`` gives this source (after ``classes``), without copying rows."""
    test, validation, train = split_indices(
        len(source.train), source.test is not None, validation_fraction, test_fraction, split_seed
    )

    def count(part_labels: np.ndarray | None, rows: int) -> int:
        return rows if classes is None else int(np.isin(part_labels, classes).sum())

    labels = source.train.y
    if source.test is not None:  # the source's official test split: all of its rows
        test_rows = count(source.test.y, len(source.test))
    else:
        test_rows = count(None if labels is None else labels[test], len(test))
    return {
        "train": count(None if labels is None else labels[train], len(train)),
        "validation": count(None if labels is None else labels[validation], len(validation)),
        "test": test_rows,
    }


def holds_test_rows(has_test: bool, test_fraction: float) -> bool:
    """Whether the split has a test split: the source's own, or ``test_fraction`` > 0 of its rows.
    With neither, every row is a training or validation row, and no test split is expected."""
    return has_test or test_fraction > 0.0


def _enough(sizes: dict[str, int], min_validation_rows: int, expects_test: bool) -> bool:
    test_ok = sizes["test"] >= 1 or not expects_test
    return sizes["validation"] >= min_validation_rows and sizes["train"] >= 1 and test_ok


def rows_needed(source: SourceData, validation_fraction: float, test_fraction: float, min_validation_rows: int) -> int:
    """The fewest rows (no --classes) whose split gives ``min_validation_rows`` validation rows and
    non-empty training and test splits (no test split with ``test_fraction`` 0 and no test split of
    the source's own), found by replaying the split arithmetic."""
    has_test = source.test is not None
    expects_test = holds_test_rows(has_test, test_fraction)
    remaining_share = validation_fraction * (1.0 if has_test else 1.0 - test_fraction)
    # round() reaches min_validation_rows by num_rows * share >= min - 0.5; the bound leaves room to spare.
    upper = math.ceil((min_validation_rows + 1) / remaining_share) + 3
    for num_rows in range(len(source.train) + 1, max(upper, len(source.train) + 2)):
        test_count, validation_count = split_counts(num_rows, has_test, validation_fraction, test_fraction)
        sizes = {
            "train": num_rows - test_count - validation_count,
            "validation": validation_count,
            "test": len(source.test) if has_test else test_count,
        }
        if _enough(sizes, min_validation_rows, expects_test):
            return num_rows
    return upper


def fraction_needed(
    source: SourceData,
    classes: tuple[int, ...] | None,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
    min_validation_rows: int,
) -> float | None:
    """The smallest --validation-fraction (in steps of 0.01, up to 0.5) above the given one that gives
    enough validation rows on this very data (the split replayed, --classes applied); None if none does."""
    first_step = math.floor(validation_fraction / FRACTION_STEP) + 1
    expects_test = holds_test_rows(source.test is not None, test_fraction)
    for step in range(first_step, round(MAX_SUGGESTED_FRACTION / FRACTION_STEP) + 1):
        fraction = step / round(1 / FRACTION_STEP)  # e.g. 20 / 100: the same float as the flag "0.2"
        sizes = split_sizes(source, classes, fraction, test_fraction, split_seed)
        if _enough(sizes, min_validation_rows, expects_test):
            return fraction
    return None


def too_few_validation_rows(
    source: SourceData,
    classes: tuple[int, ...] | None,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
    min_validation_rows: int,
) -> str | None:
    """Why the split leaves too few validation rows for calibration, and what to change; None if enough.

    Returns:
        One line: the rows and the validation rows they give, the minimum, the rows that would be
        enough (exact without --classes; about, with them: the split places new rows at random) and the
        --validation-fraction that would be enough on this data, if one up to 0.5 is.
    """
    sizes = split_sizes(source, classes, validation_fraction, test_fraction, split_seed)
    if sizes["validation"] >= min_validation_rows:
        return None
    total = len(source.train)
    needed = rows_needed(source, validation_fraction, test_fraction, min_validation_rows)
    if classes is None:
        given = f"{total} rows give {sizes['validation']} validation rows after the split"
        more = f"provide at least {needed} rows"
    else:
        selected = int(np.isin(source.train.y, classes).sum())
        given = (
            f"--classes {','.join(map(str, classes))} keeps {selected} of {total} rows, which give "
            f"{sizes['validation']} validation rows after the split"
        )
        # Where the new rows fall in the split is random, so only about this many of them are enough.
        more = f"provide more rows of those classes (about {needed} of them)"
    fraction = fraction_needed(source, classes, validation_fraction, test_fraction, split_seed, min_validation_rows)
    advice = more if fraction is None else f"{more} or raise {FRACTION_FLAG} to {fraction:g}"
    return (
        f"{given} ({FRACTION_FLAG} {validation_fraction:g}); calibration needs at least {min_validation_rows}: {advice}"
    )
