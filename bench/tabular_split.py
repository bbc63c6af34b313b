"""The fixed breast-cancer anomaly split shared by the PyOD peer and vae-serve (numpy + scikit-learn only).

scikit-learn's Wisconsin breast-cancer data (569 rows, 30 features; target 0 = malignant, 1 = benign).
Normal = benign, anomaly = malignant. With ``np.random.default_rng(seed)`` the benign rows are
permuted; the first round(0.7 * 357) = 250 of them are the training rows, and the test set is the other
107 benign rows plus all 212 malignant rows (319 rows, test_y 1 = malignant). Both sets are returned
in the data set's row order, so the result depends on the seed only through which rows are chosen.

    python bench/tabular_split.py DIR        # writes DIR/train.csv and DIR/test.csv

The CSVs carry the 30 features under sanitized names (``mean radius`` -> ``mean_radius``) and a
``label`` column (train: all 0; test: 1 = malignant), for
``vae-train train --dataset csv:DIR/train.csv --label-column label``. Values are written with Python's
shortest round-trip repr, so the CSV rows are bit-identical to the arrays.
"""

import re
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

TRAIN_FRACTION = 0.7


def feature_names() -> list[str]:
    """scikit-learn's 30 feature names with every character outside [A-Za-z0-9_] replaced by '_'."""
    return [re.sub(r"[^A-Za-z0-9_]", "_", name) for name in load_breast_cancer().feature_names]


def breast_cancer_indices(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into load_breast_cancer().data: (train rows, test rows), each sorted."""
    target = load_breast_cancer().target
    benign = np.flatnonzero(target == 1)
    malignant = np.flatnonzero(target == 0)
    permuted = benign[np.random.default_rng(seed).permutation(len(benign))]
    n_train = round(TRAIN_FRACTION * len(benign))
    train = np.sort(permuted[:n_train])
    test = np.sort(np.concatenate([permuted[n_train:], malignant]))
    return train, test


def breast_cancer_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_x [250, 30] benign only, test_x [319, 30], test_y [319] with 1 = malignant), float64 / int64."""
    data = load_breast_cancer()
    train, test = breast_cancer_indices(seed)
    test_y = (data.target[test] == 0).astype(np.int64)
    return data.data[train], data.data[test], test_y


def _write_csv(path: Path, x: np.ndarray, label: np.ndarray) -> None:
    lines = [",".join([*feature_names(), "label"])]
    lines += [",".join([*(repr(float(v)) for v in row), str(int(y))]) for row, y in zip(x, label, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def write_breast_cancer_csv(directory, seed: int = 0) -> tuple[Path, Path]:
    """Writes DIRECTORY/train.csv (label 0) and DIRECTORY/test.csv (label 1 = malignant); returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, test_x, test_y = breast_cancer_split(seed)
    train_csv, test_csv = directory / "train.csv", directory / "test.csv"
    _write_csv(train_csv, train_x, np.zeros(len(train_x), dtype=np.int64))
    _write_csv(test_csv, test_x, test_y)
    return train_csv, test_csv


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/tabular_split.py DIR")
    for written in write_breast_cancer_csv(sys.argv[1]):
        print(written)
