"""Run by tests/test_oip.py with a venv that has tritonclient[grpc]==2.51.0 (not the project's).

Usage: tritonclient_probe.py HOST:PORT BUNDLE_NAME DIR. Reads DIR/x.npy, talks to vae-serve with
tritonclient's own gRPC client, writes DIR/outputs.npz and prints one JSON line of what it saw.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def infer(client, model: str, name: str, values: np.ndarray, parameters=None) -> triton.InferResult:
    tensor = triton.InferInput(name, list(values.shape), "FP32")
    tensor.set_data_from_numpy(values.astype(np.float32))
    return client.infer(model, [tensor], parameters=parameters)


def main() -> None:
    address, bundle, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    x = np.load(folder / "x.npy")
    client = triton.InferenceServerClient(address)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "models_ready": [client.is_model_ready(f"{bundle}-{part}") for part in ("encoder", "decoder", "elbo")],
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(f"{bundle}-encoder", as_json=True),
        "config": client.get_model_config(f"{bundle}-encoder", as_json=True)["config"],
    }
    encoded = infer(client, f"{bundle}-encoder", "x", x)
    bounds = infer(client, f"{bundle}-elbo", "x", x, parameters={"k": 20, "seed": 11})
    report["seed"] = int(bounds.get_response().parameters["seed"].uint64_param)
    try:
        infer(client, f"{bundle}-nothing", "x", x)
        report["not_found_status"] = None
    except InferenceServerException as error:
        report["not_found_status"] = error.status()
    np.savez(
        folder / "outputs.npz",
        z_mean=encoded.as_numpy("z_mean"),
        elbo=bounds.as_numpy("elbo"),
        iwae=bounds.as_numpy("iwae"),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
