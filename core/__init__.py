"""vae-serve core: model bundles, ONNX Runtime sessions, VAE math, bounds, anomaly scores and their
calibration. Imports neither torch nor grpc; the server (vae_serve.service) and the exporter
(vae_serve.export) both build on it.
"""
