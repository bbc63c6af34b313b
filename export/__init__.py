"""vae-serve training side: data sources, the PyTorch VAE, training, ONNX export, bundle writing."""
