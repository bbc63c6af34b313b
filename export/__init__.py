"""vae-serve training side: data sources, the PyTorch VAE, training, ONNX export, bundle writing.

``from vae_serve.export import export_bundle`` exports any PyTorch VAE (docs/your-model.md). It is
imported on first use, so that ``vae-train --help`` and the torch-free commands never load torch.
"""

__all__ = ["export_bundle"]


def __getattr__(name: str):
    if name == "export_bundle":
        from vae_serve.export.bundle.exporter import export_bundle

        return export_bundle
    raise AttributeError(f"module 'vae_serve.export' has no attribute {name!r}")
