"""``vae-train verify``: load a bundle as the server does and print what it is. Needs no torch."""

import argparse
from pathlib import Path

from vae_serve.export.commands.outcome import summarize

NAME = "verify"
SUMMARY = "verify a bundle as the server does (no torch)"
DESCRIPTION = "Verify a model bundle as the server does: checksums, graphs, golden outputs. Needs no torch."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train verify``."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle directory to verify")


def run(args: argparse.Namespace) -> int:
    """``vae-train verify``: load the bundle as the server does; print what it is."""
    from vae_serve.core.bundle import load_bundle
    from vae_serve.core.errors import BundleError

    def verify() -> dict:
        manifest = load_bundle(args.bundle).manifest
        return {
            "bundle": str(args.bundle),
            "verified": True,
            "name": manifest.name,
            "version": manifest.version,
            "likelihood": manifest.likelihood.name,
            "input_shape": manifest.input.shape,
            "latent_dim": manifest.latent_dim,
            # null when the training run kept no test rows (vae-train train --test-fraction 0, its default)
            "test": None if manifest.metrics.test is None else manifest.metrics.test.model_dump(),
        }

    return summarize("verify", verify, (), (BundleError,), "bundle refused")
