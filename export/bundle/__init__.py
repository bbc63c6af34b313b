"""From a trained model to a verified, published bundle: ONNX export and its checks, the fused bounds
graph, calibration, the manifest, writing and publishing, and Triton model repositories.
``exporter.export_bundle`` is the entry point (``vae_serve.export.export_bundle``)."""
