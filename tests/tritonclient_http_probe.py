"""Run by tests/test_http.py with a venv that has tritonclient[http]==2.51.0 (not the project's).

Usage: tritonclient_http_probe.py HOST:PORT BUNDLE DIR. Reads DIR/x.npy, talks to vae-serve's REST
binding with tritonclient's own HTTP client (binary tensors, its default, and JSON ones), writes
DIR/outputs.npz and prints one JSON line of what it saw.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def infer(client, model: str, values: np.ndarray, binary: bool, outputs=(), parameters=None) -> triton.InferResult:
    tensor = triton.InferInput("x", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values.astype(np.float32), binary_data=binary)
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model, [tensor], outputs=requested or None, parameters=parameters)


def main() -> None:
    address, bundle, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    x = np.load(folder / "x.npy")
    client = triton.InferenceServerClient(address)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "models_ready": [client.is_model_ready(f"{bundle}-{part}") for part in ("encoder", "decoder", "elbo")],
        "unknown_ready": client.is_model_ready(f"{bundle}-nothing"),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(f"{bundle}-encoder"),
        "config": client.get_model_config(f"{bundle}-encoder"),
    }
    binary = infer(client, f"{bundle}-encoder", x, binary=True, outputs=("z_mean", "z_logvar"))
    as_json = infer(client, f"{bundle}-encoder", x, binary=False, outputs=("z_mean",))
    bounds = infer(client, f"{bundle}-elbo", x, binary=True, parameters={"k": 20, "seed": 11})
    report["seed"] = bounds.get_response()["parameters"]["seed"]
    report["json_outputs"] = [output["name"] for output in as_json.get_response()["outputs"]]
    try:
        infer(client, f"{bundle}-encoder", x[:, :10], binary=True)
        report["bad_shape"] = None
    except InferenceServerException as error:
        report["bad_shape"] = [error.status(), error.message()]
    np.savez(
        folder / "outputs.npz",
        z_mean=binary.as_numpy("z_mean"),
        z_logvar=binary.as_numpy("z_logvar"),
        z_mean_json=as_json.as_numpy("z_mean"),
        elbo=bounds.as_numpy("elbo"),
        iwae=bounds.as_numpy("iwae"),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
