"""vae-serve runtime side: bundle loading, ONNX Runtime execution and VAE math. Never imports torch."""
