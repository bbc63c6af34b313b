"""The PyTorch VAE (MLP and convolutional), its training and evaluation, and the ``TrainConfig`` of a run.
Only ``config`` is importable without torch."""
