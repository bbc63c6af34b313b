"""``digits``: scikit-learn's bundled 8x8 digits, embedded (no files, no download)."""

import numpy as np

from vae_serve.core.preprocessing import pixel_scaling
from vae_serve.export.sources.base import Part, SourceData, SourceOptions


def load_digits_source(location: str = "", options: SourceOptions | None = None) -> SourceData:
    """scikit-learn's bundled 8x8 digits (1,797 images, grey levels 0..16); the bundle scales them to [0, 1]."""
    from sklearn.datasets import load_digits  # imported here: only this source needs scikit-learn

    digits = load_digits()
    preprocessing = pixel_scaling(16.0)
    return SourceData(
        train=Part(digits.data.astype(np.float32), digits.target.astype(np.int64)),
        test=None,
        example_shape=(8, 8),
        value_range=(0.0, 16.0),
        description={
            "source": "digits",
            "location": "sklearn.datasets.load_digits",
            "preprocessing": preprocessing.description,
        },
        preprocessing=preprocessing,
    )
