"""The data sets and fixed splits of bench/protocol.py (numpy, scikit-learn and the package's sources only).

Every one-class task is (data set, normal class c). Its rows:
- test: fixed once per data set (seed 0), the same rows for every c; never used to choose anything.
- fit: the normal rows given to ``vae-train train`` (it holds out its own validation rows from them).
- selection: normal rows the model never trained on, and anomalies drawn from the non-test rows.
See bench/protocol.py's docstring for the protocol these serve.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split

from vae_serve.export.sources import load_source
from vae_serve.export.sources.split_plan import split_indices

TABLES = ("breast_cancer", "wine", "digits_table")
DATA_SETS = (*TABLES, "fashion")
TEST_FRACTION = 0.4  # tables: the stratified test part
SELECTION_FRACTION = 0.25  # tables: share of the non-test normal rows held out of training, for selection
FASHION_SELECTION_ANOMALIES = 5000  # Fashion: other classes' training images in the selection split
FASHION_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLIT_SEED = 0


@dataclass(frozen=True)
class Table:
    """A labelled table: rows [n, D] float64, labels [n], the names of the classes that are normal in turn."""

    x: np.ndarray
    y: np.ndarray
    normal_classes: dict[int, str]


def load_table_data(name: str) -> Table:
    """scikit-learn's bundled tables. breast_cancer: benign (target 1) is the one normal class;
    wine: each of 3 cultivars in turn; digits_table: the 8x8 digits as 64 features valued 0..16."""
    if name == "breast_cancer":
        data = load_breast_cancer()
        return Table(data.data, data.target, {1: "benign"})
    if name == "wine":
        data = load_wine()
        return Table(data.data, data.target, {c: f"cultivar {c}" for c in range(3)})
    if name == "digits_table":
        data = load_digits()
        return Table(data.data, data.target, {c: f"digit {c}" for c in range(10)})
    raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")


def table_test_rows(table: Table) -> np.ndarray:
    """Boolean mask of the test rows: a 60/40 split stratified by class, seed 0, fixed per data set."""
    _, test = train_test_split(
        np.arange(len(table.y)), test_size=TEST_FRACTION, stratify=table.y, random_state=SPLIT_SEED
    )
    mask = np.zeros(len(table.y), dtype=bool)
    mask[test] = True
    return mask


@dataclass(frozen=True)
class TaskRows:
    """One one-class task's rows: labels are 1 = anomaly. ``fit_x`` is what vae-train is given (tables)."""

    test_x: np.ndarray
    test_y: np.ndarray
    selection_x: np.ndarray
    selection_y: np.ndarray
    fit_x: np.ndarray | None


def table_task(table: Table, normal: int) -> TaskRows:
    """Tables: fit = 75 % of the non-test normal rows; selection = the other 25 % (normal) plus every
    non-test row of the other classes (anomalies). The 25 % are drawn with seed (0, normal)."""
    test = table_test_rows(table)
    normal_rows = np.flatnonzero(~test & (table.y == normal))
    held = np.random.default_rng([SPLIT_SEED, normal]).permutation(normal_rows)
    selection_normal = np.sort(held[: round(SELECTION_FRACTION * len(held))])
    fit = np.sort(held[len(selection_normal) :])
    anomalies = np.flatnonzero(~test & (table.y != normal))
    selection = np.concatenate([selection_normal, anomalies])
    return TaskRows(
        test_x=table.x[test].astype(np.float32),
        test_y=(table.y[test] != normal).astype(np.int64),
        selection_x=table.x[selection].astype(np.float32),
        selection_y=np.r_[np.zeros(len(selection_normal)), np.ones(len(anomalies))].astype(np.int64),
        fit_x=table.x[fit],
    )


def write_table_csv(path: Path, x: np.ndarray) -> None:
    """A CSV of numeric features f0..f{D-1}, values at full precision (``%.17g`` round-trips a float64)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(f"f{i}" for i in range(x.shape[1]))
    tmp = path.with_name(path.name + ".tmp")
    np.savetxt(tmp, x, delimiter=",", header=header, comments="", fmt="%.17g")
    tmp.replace(path)


def seen_rows(num_rows: int, data_record: dict) -> np.ndarray:
    """Indices (into the rows vae-train was given) of the rows it trained or validated on, from its
    manifest's ``training.data`` record (its own test rows, if it kept any, are excluded).

    Args:
        num_rows: the rows given to vae-train.
        data_record: manifest["training"]["data"] (split_seed, validation_fraction, examples).

    Returns:
        Sorted indices of the training and validation rows.
    """
    test_count = int((data_record.get("examples") or {}).get("test") or 0)
    test, _, _ = split_indices(
        num_rows, False, data_record["validation_fraction"], test_count / num_rows, data_record["split_seed"]
    )
    return np.setdiff1d(np.arange(num_rows), test)


def fashion_task(source, normal: int, data_record: dict) -> TaskRows:
    """Fashion-MNIST, class ``normal``: test = the official 10,000; selection = class c's validation
    rows as vae-train drew them (from its manifest's data record) + a fixed random 5,000 of the other
    classes' training images (seed (0, normal))."""
    train_y = source.train.y
    _, validation, _ = split_indices(
        len(train_y), True, data_record["validation_fraction"], 0.0, data_record["split_seed"]
    )
    selection_normal = np.sort(validation[train_y[validation] == normal])
    others = np.flatnonzero(train_y != normal)
    anomalies = np.sort(np.random.default_rng([SPLIT_SEED, normal]).choice(others, FASHION_SELECTION_ANOMALIES, False))
    selection = np.concatenate([selection_normal, anomalies])
    return TaskRows(
        test_x=source.test.x,
        test_y=(source.test.y != normal).astype(np.int64),
        selection_x=source.train.x[selection],
        selection_y=np.r_[np.zeros(len(selection_normal)), np.ones(len(anomalies))].astype(np.int64),
        fit_x=None,
    )


def load_fashion():
    """The Fashion-MNIST source as vae-train reads it (raw 0-255 pixels, official test split)."""
    return load_source("fashion-mnist")
