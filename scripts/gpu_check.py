"""The CUDA path, checked end to end on a machine with an NVIDIA GPU (issue 13): run by
``scripts/gpu_check.sh``, which documents how. Writes a markdown report and exits 0 only if every
check passed. Needs vae-serve installed with ``onnxruntime-gpu`` in place of ``onnxruntime``.

1. ONNX Runtime's CUDA execution provider loads.
2. ``vae-serve --device cuda`` starts, says SERVING and answers every rpc.
3. Its replies equal a ``--device cpu`` server's within the stated tolerance (same seed).
4. Elbo throughput, GPU against CPU: batch 1 (calls/s, closed loop, 1 and 16 callers) and batch
   4096 (rows/s), served; and in-process, the two graphs at batch 4096 with ``session.run`` against
   I/O binding (outputs left on the device).
"""

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# GPU and CPU kernels sum in different orders (and cuBLAS may use TF32 for float32 matrix
# products on Ampere and later): agreement is relative, at a level far below any model effect.
RELATIVE_TOLERANCE = 2e-3
ABSOLUTE_TOLERANCE = 1e-3
BIG_BATCH_ROWS = 4096
MEASURE_S = float(os.environ.get("GPU_CHECK_MEASURE_S", "5"))  # seconds per measured point
# GPU_CHECK_DEVICE=cpu runs every step with the CPU in the GPU's place: a dry run of this script
# on a machine without a GPU (the comparison is then CPU against CPU).
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
PROVIDERS = {"cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu": ["CPUExecutionProvider"]}


def start(bundle: Path, device: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "vae_serve.service", "--bundle", str(bundle), "--device", device]
    command += ["--port", "0", "--no-metrics", "--max-rows", str(BIG_BATCH_ROWS), "--max-row-samples", "1000000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if match := re.search(r"listening on (\S+)", line):
            return process, match.group(1)
    raise RuntimeError(f"vae-serve --device {device} exited with {process.wait()} before listening")


def replies(client, x: np.ndarray, latent_dim: int) -> dict[str, np.ndarray]:
    """Every rpc's numbers for fixed inputs and seeds."""
    z = np.random.default_rng(1).standard_normal((len(x), latent_dim)).astype(np.float32)
    encoded = client.encode(x, num_samples=2, seed=1)
    decoded = client.decode(z, num_samples=2, seed=1)
    bounds = client.elbo(x, k=10, seed=1)
    scored = client.score(x, "negative_iwae", seed=1)
    sampled = client.sample(64, seed=1)
    path = client.interpolate(x[:2], x[2:4], steps=5, seed=1)
    return {
        "Encode z_mean": encoded.z_mean,
        "Encode z_samples": encoded.z_samples,
        "Decode x_mean": decoded.x_mean,
        "Elbo elbo": bounds.elbo,
        "Elbo iwae": bounds.iwae,
        "ScoreAnomaly negative_iwae": scored.scores,
        "Sample x_mean": sampled.x_mean,
        "Interpolate x_mean": path.x_mean,
    }


def compare(gpu: dict, cpu: dict) -> list[tuple[str, float, float, bool]]:
    rows = []
    for name, want in cpu.items():
        got = gpu[name]
        gap = np.abs(got.astype(np.float64) - want)
        relative = float(np.max(gap / np.maximum(np.abs(want), 1.0)))
        ok = bool(np.all(gap <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * np.abs(want)))
        rows.append((name, float(gap.max()), relative, ok))
    return rows


def served_rate(target: str, x: np.ndarray, callers: int) -> float:
    """Elbo k=1 calls per second over MEASURE_S, ``callers`` closed loops."""
    from vae_serve.client import VaeClient

    def loop() -> int:
        with VaeClient(target) as client:
            client.elbo(x, seed=1)
            calls, stop_at = 0, time.perf_counter() + MEASURE_S
            while time.perf_counter() < stop_at:
                client.elbo(x, seed=1)
                calls += 1
            return calls

    with ThreadPoolExecutor(callers) as pool:
        return sum(pool.map(lambda _: loop(), range(callers))) / MEASURE_S


def in_process(bundle: Path, x: np.ndarray) -> dict[str, float]:
    """Encoder + decoder at batch 4096 on CUDA: session.run (copies both ways) against I/O binding
    (input copied once, outputs kept on the GPU), rows per second."""
    import onnxruntime as ort

    from vae_serve.core.bundle import load_bundle

    vae = load_bundle(bundle, providers=PROVIDERS[DEVICE]).vae
    rates = {}
    for mode in ("run", "iobinding"):
        x_gpu = ort.OrtValue.ortvalue_from_numpy(x, DEVICE, 0)
        calls, stop_at = 0, time.perf_counter() + MEASURE_S
        while time.perf_counter() < stop_at:
            if mode == "run":
                z_mean, _ = vae.encoder.run(["z_mean", "z_logvar"], {"x": x})
                vae.decoder.run(None, {"z": z_mean})
            else:
                binding = vae.encoder.io_binding()
                binding.bind_ortvalue_input("x", x_gpu)
                binding.bind_output("z_mean", DEVICE)
                binding.bind_output("z_logvar", DEVICE)
                vae.encoder.run_with_iobinding(binding)
                decoder_binding = vae.decoder.io_binding()
                decoder_binding.bind_ortvalue_input("z", binding.get_outputs()[0])
                for output in vae.decoder.get_outputs():
                    decoder_binding.bind_output(output.name, DEVICE)
                vae.decoder.run_with_iobinding(decoder_binding)
            calls += 1
        rates[mode] = calls * len(x) / MEASURE_S
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    import onnxruntime as ort

    lines = ["# GPU check", "", f"onnxruntime {ort.__version__}; providers {ort.get_available_providers()}", ""]
    if DEVICE == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        lines.append("**FAIL**: no CUDAExecutionProvider: install onnxruntime-gpu (matching the CUDA runtime).")
        args.report.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 1
    from vae_serve.client import VaeClient
    from vae_serve.core.bundle import load_bundle

    manifest = load_bundle(args.bundle).manifest
    rng = np.random.default_rng(0)
    x_small = rng.random((256, manifest.input.num_features), dtype=np.float32)
    x_small *= np.float32(manifest.preprocessing.scale[0] if manifest.preprocessing else 1.0)
    x_big = np.resize(x_small, (BIG_BATCH_ROWS, manifest.input.num_features))
    results, ok = {}, True
    servers = {"cuda": start(args.bundle, DEVICE), "cpu": start(args.bundle, "cpu")}
    try:
        for device, (_, target) in servers.items():
            with VaeClient(target, timeout_s=120) as client:
                client.wait_until_serving(120)
                results[device] = {
                    "providers": list(client.info().providers),
                    "replies": replies(client, x_small, manifest.latent_dim),
                }
            results[device]["b1_c1"] = served_rate(target, x_small[:1], 1)
            results[device]["b1_c16"] = served_rate(target, x_small[:1], 16)
            results[device]["b4096_rows"] = served_rate(target, x_big, 1) * BIG_BATCH_ROWS
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    lines += [
        f"providers in use: cuda server {results['cuda']['providers']}, cpu server {results['cpu']['providers']}",
        "",
    ]
    ok &= results["cuda"]["providers"][0] == PROVIDERS[DEVICE][0]
    lines += ["| reply | max abs diff GPU vs CPU | max relative | within tolerance |", "|---|---|---|---|"]
    for name, gap, relative, within in compare(results["cuda"]["replies"], results["cpu"]["replies"]):
        lines.append(f"| {name} | {gap:.3g} | {relative:.3g} | {'yes' if within else '**NO**'} |")
        ok &= within
    lines += ["", f"Tolerance: |gpu - cpu| <= {ABSOLUTE_TOLERANCE:g} + {RELATIVE_TOLERANCE:g} |cpu|.", ""]
    lines += ["| Elbo, k=1, served | GPU | CPU | GPU/CPU |", "|---|---|---|---|"]
    for key, label in (
        ("b1_c1", "batch 1, 1 caller (calls/s)"),
        ("b1_c16", "batch 1, 16 callers (calls/s)"),
        ("b4096_rows", f"batch {BIG_BATCH_ROWS} (rows/s)"),
    ):
        gpu, cpu = results["cuda"][key], results["cpu"][key]
        lines.append(f"| {label} | {gpu:,.0f} | {cpu:,.0f} | {gpu / cpu:.2f}x |")
    rates = in_process(args.bundle, x_big)
    gain = rates["iobinding"] / rates["run"]
    lines.append("")
    lines.append(
        f"In-process on CUDA, encoder + decoder at batch {BIG_BATCH_ROWS}: session.run {rates['run']:,.0f} rows/s, "
        f"I/O binding {rates['iobinding']:,.0f} rows/s ({gain:.2f}x)."
    )
    lines += ["", "**PASS**" if ok else "**FAIL**"]
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
