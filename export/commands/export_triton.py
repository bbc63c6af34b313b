"""``vae-train export-triton``: write a bundle's graphs as a Triton model repository. Needs no torch."""

import argparse
from pathlib import Path

from vae_serve.core.manifest import repository_layout
from vae_serve.export.commands.flags import integer_from, model_name
from vae_serve.export.commands.outcome import note, summarize

NAME = "export-triton"
SUMMARY = "write a bundle's graphs as a Triton model repository (no torch)"
DESCRIPTION = (
    "Write a verified bundle's encoder, decoder and bounds graph into a Triton Inference Server model "
    "repository, each with its config.pbtxt (onnxruntime_onnx). Needs no torch. See docs/scaling.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vae-train export-triton``."""
    from vae_serve.export.bundle.triton_repo import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US, KINDS

    parser.add_argument("--bundle", required=True, type=Path, help="the bundle to export (verified first)")
    parser.add_argument("--out", required=True, type=Path, help="the Triton model repository (created if missing)")
    parser.add_argument("--name", type=model_name, help="prefix of the models' names (default: the manifest's name)")
    parser.add_argument(
        "--version",
        type=integer_from(1),
        help="Triton's version directory (default: the manifest's version, which must then be an integer)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=integer_from(1),
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"rows Triton may batch into one run of the encoder or decoder (default {DEFAULT_MAX_BATCH_SIZE}, "
        "vae-serve's --max-rows); the bounds graph is never batched by Triton",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=integer_from(0),
        default=DEFAULT_MAX_QUEUE_DELAY_US,
        help=f"dynamic batching: longest wait for more requests, microseconds (default {DEFAULT_MAX_QUEUE_DELAY_US})",
    )
    parser.add_argument("--kind", choices=sorted(KINDS), default="gpu", help="instance kind (default: gpu)")
    parser.add_argument(
        "--instances", type=integer_from(1), default=1, help="instances per model and device (default 1)"
    )
    parser.add_argument("--force", action="store_true", help="replace versions that exist in the repository")


def run(args: argparse.Namespace) -> int:
    """``vae-train export-triton``: see ``bundle.triton_repo.export_triton``."""
    from vae_serve.core.errors import BundleError
    from vae_serve.export.bundle.triton_repo import Serving, TritonExportError, export_triton
    from vae_serve.export.bundle.writer import PublishError

    def run() -> dict:
        serving = Serving(args.max_batch_size, args.max_queue_delay_us, args.kind, args.instances)
        summary = export_triton(args.bundle, args.out, serving, name=args.name, version=args.version, force=args.force)
        layout = repository_layout(args.bundle)
        if layout is not None and layout != (summary["name"], summary["version"]) and not (args.name or args.version):
            note(
                "export-triton",
                f"exported under the manifest's {summary['name']}:{summary['version']}, but vae-serve serves "
                f"{args.bundle} as {layout[0]}:{layout[1]}; pass --name {layout[0]} --version {layout[1]} to match",
            )
        if not summary["bounds_graph"]:
            note(
                "export-triton",
                "the bundle has no bounds graph (bounds.onnx, written by exports since 2026-11-29): "
                "only the encoder and the decoder were exported; train the model again for one",
            )
        return summary

    refused = (TritonExportError, PublishError)
    return summarize("export-triton", run, refused, (BundleError,), "bundle refused")
