"""Run by tests/test_model_statistics.py with a venv that has tritonclient[grpc,http]==2.51.0.

Usage: tritonclient_stats_probe.py GRPC_HOST:PORT HTTP_HOST:PORT MODEL. Asks vae-serve for Triton's
statistics with tritonclient's own clients (``get_inference_statistics``, over gRPC and HTTP): of
MODEL, of every model, and of an unknown model; prints one JSON line of what it saw.
"""

import json
import sys

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException


def refusal(ask) -> str | None:
    """The status tritonclient raised for a call that should fail (None: it did not fail)."""
    try:
        ask()
    except InferenceServerException as error:
        return f"{error.status()} {error.message()}"
    return None


def main() -> None:
    grpc_address, http_address, model = sys.argv[1], sys.argv[2], sys.argv[3]
    grpc_client = triton_grpc.InferenceServerClient(grpc_address)
    http_client = triton_http.InferenceServerClient(http_address)
    grpc_reply = grpc_client.get_inference_statistics(model_name=model)  # Triton's own message class
    report = {
        "grpc_class": type(grpc_reply).__module__ + "." + type(grpc_reply).__name__,
        "grpc": grpc_client.get_inference_statistics(model_name=model, as_json=True),
        "http": http_client.get_inference_statistics(model_name=model),
        "http_version": http_client.get_inference_statistics(model_name=model, model_version="1"),
        "grpc_all": grpc_client.get_inference_statistics(as_json=True),
        "http_all": http_client.get_inference_statistics(),
        "grpc_unknown": refusal(lambda: grpc_client.get_inference_statistics(model_name="nothing-elbo")),
        "http_unknown": refusal(lambda: http_client.get_inference_statistics(model_name="nothing-elbo")),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
