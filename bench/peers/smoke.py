"""Smoke test of a peer server over the KServe v2 / Open Inference Protocol gRPC API.

Usage (either peer venv; both hold tritonclient 2.51.0, whose generated stubs this uses raw):
    bench/.venvs/triton/bin/python bench/peers/smoke.py --target 127.0.0.1:P [--bundle DIR]

Checks ServerReady, ServerMetadata, and for each served model ModelReady, ModelMetadata (names,
datatypes, shapes) and ModelInfer with raw_input_contents: output names, datatypes, shapes and
finiteness; ELBO <= 0 (Bernoulli log-likelihood of x in [0, 1] minus a KL); for k100 mean IWAE >=
mean ELBO; and a burst of concurrent requests of different row counts, so the server's batcher
merges and splits them (each reply must have its own request's rows). With --bundle also: the
encoder outputs equal a local ONNX Runtime run, and the k1 ELBO agrees with a local Monte-Carlo
estimate of the same expectation (the peers draw their own noise, so only statistically).
Prints one "OK <model> ..." line per model; exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vae_compute import MODELS, VaeCompute

NP_DTYPE = {"FP32": np.float32, "FP64": np.float64}


class SmokeFailure(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def wait_ready(stub, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            if stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=2).ready:
                return
            last = "ServerReady: ready=false"
        except grpc.RpcError as error:
            last = f"ServerReady: {error.code().name} {error.details()}"
        time.sleep(0.5)
    raise SmokeFailure(f"server not ready after {timeout_s:.0f} s ({last})")


def infer_request(model: str, x: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend(x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return request


def decode_outputs(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """name -> array, from raw_output_contents (what both peers send for raw inputs) or typed contents."""
    result = {}
    for index, output in enumerate(response.outputs):
        dtype = NP_DTYPE.get(output.datatype)
        check(dtype is not None, f"output {output.name}: unexpected datatype {output.datatype}")
        if response.raw_output_contents:
            values = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
        else:
            values = np.asarray(
                output.contents.fp32_contents if dtype == np.float32 else output.contents.fp64_contents, dtype=dtype
            )
        result[output.name] = values.reshape(tuple(output.shape))
    return result


def expected_shapes(model: str, rows: int, latent_dim: int) -> dict[str, tuple[int, ...]]:
    k, outputs = MODELS[model]
    return {name: (rows, latent_dim) if k is None else (rows, 1) for name in outputs}


def check_outputs(model: str, outputs: dict[str, np.ndarray], rows: int, latent_dim: int) -> None:
    want = expected_shapes(model, rows, latent_dim)
    check(set(outputs) == set(want), f"{model}: outputs {sorted(outputs)}, want {sorted(want)}")
    for name, shape in want.items():
        value = outputs[name]
        want_dtype = np.float32 if MODELS[model][0] is None else np.float64
        check(value.dtype == want_dtype, f"{model}.{name}: dtype {value.dtype}, want {np.dtype(want_dtype)}")
        check(value.shape == shape, f"{model}.{name}: shape {list(value.shape)}, want {list(shape)}")
        check(bool(np.all(np.isfinite(value))), f"{model}.{name}: non-finite values")


def check_metadata(stub, model: str, num_features: int, latent_dim: int) -> None:
    check(stub.ModelReady(service_pb2.ModelReadyRequest(name=model), timeout=10).ready, f"{model}: not ready")
    meta = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=model), timeout=10)
    inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
    check(inputs == {"x": ("FP32", [-1, num_features])}, f"{model}: metadata inputs {inputs}")
    k, names = MODELS[model]
    want = {n: ("FP32", [-1, latent_dim]) if k is None else ("FP64", [-1, 1]) for n in names}
    outputs = {t.name: (t.datatype, list(t.shape)) for t in meta.outputs}
    check(outputs == want, f"{model}: metadata outputs {outputs}, want {want}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the peer's gRPC endpoint")
    parser.add_argument("--bundle", help="the bundle the peer serves (enables the numeric checks)")
    parser.add_argument("--features", type=int, default=64, help="D when no --bundle is given (default 64)")
    parser.add_argument("--latent", type=int, default=8, help="L when no --bundle is given (default 8)")
    parser.add_argument("--rows", type=int, default=64, help="rows per request (default 64; k100 allows <= 64)")
    parser.add_argument("--concurrent", type=int, default=16, help="requests in the concurrent burst (default 16)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for ServerReady (default 60)")
    args = parser.parse_args(argv)

    local = VaeCompute(args.bundle, seed=0) if args.bundle else None
    num_features, latent_dim = (local.num_features, local.latent_dim) if local else (args.features, args.latent)
    rng = np.random.default_rng(1)
    channel = grpc.insecure_channel(
        args.target, options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    )
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        wait_ready(stub, args.wait)
        server = stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=10)
        print(f"server {server.name} {server.version} at {args.target}: ready", flush=True)
        for model in MODELS:
            started = time.perf_counter()
            check_metadata(stub, model, num_features, latent_dim)
            x = rng.random((args.rows, num_features), dtype=np.float32)
            outputs = decode_outputs(stub.ModelInfer(infer_request(model, x), timeout=60))
            check_outputs(model, outputs, args.rows, latent_dim)
            notes = []
            if MODELS[model][0] is None:
                if local:
                    mean, logvar = local.encode(x)
                    err = max(np.abs(outputs["z_mean"] - mean).max(), np.abs(outputs["z_logvar"] - logvar).max())
                    check(err < 1e-5, f"{model}: differs from the local encoder by {err:.3g}")
                    notes.append(f"matches local encoder (max |diff| {err:.1e})")
            else:
                elbo = outputs["elbo"][:, 0]
                check(bool(np.all(elbo <= 0)), f"{model}: positive ELBO {elbo.max():.3f}")
                notes.append(f"mean elbo {elbo.mean():.3f}")
                if "iwae" in outputs:
                    iwae = outputs["iwae"][:, 0]
                    check(iwae.mean() >= elbo.mean(), f"{model}: mean iwae {iwae.mean():.3f} < mean elbo")
                    notes.append(f"mean iwae {iwae.mean():.3f} >= elbo")
                if local and MODELS[model][0] == 1:
                    # Each server row is one k=1 draw; compare the row mean with the local expectation.
                    draws = np.stack([local.bounds(x, 1, with_iwae=False)[0] for _ in range(200)])  # [200, n]
                    expected = draws.mean(axis=0).mean()
                    stderr = np.sqrt(draws.var(axis=0).sum()) / len(x)
                    gap = abs(elbo.mean() - expected)
                    check(
                        gap < 5 * stderr + 1e-3,
                        f"{model}: mean elbo {elbo.mean():.3f}, local {expected:.3f} "
                        f"(gap {gap:.3f} > 5 x stderr {stderr:.3f})",
                    )
                    notes.append(f"local expectation {expected:.3f} (gap {gap / stderr:.1f} stderr)")
            # A concurrent burst of different row counts: the batcher merges and must split correctly.
            sizes = [1 + (i * 7) % args.rows for i in range(args.concurrent)]
            xs = [rng.random((n, num_features), dtype=np.float32) for n in sizes]
            with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                futures = [pool.submit(stub.ModelInfer, infer_request(model, xb), timeout=60) for xb in xs]
                replies = [decode_outputs(f.result()) for f in futures]
            for xb, reply in zip(xs, replies, strict=True):
                check_outputs(model, reply, len(xb), latent_dim)
                if local and MODELS[model][0] is None:
                    err = np.abs(reply["z_mean"] - local.encode(xb)[0]).max()
                    check(err < 1e-5, f"{model}: concurrent reply mixed up rows (max |diff| {err:.3g})")
            notes.append(f"{args.concurrent} concurrent requests of 1-{max(sizes)} rows ok")
            elapsed = time.perf_counter() - started
            print(
                f"OK {model} shapes {dict((k, list(v.shape)) for k, v in outputs.items())}; "
                f"{'; '.join(notes)} ({elapsed:.2f} s)",
                flush=True,
            )
    except SmokeFailure as failure:
        print(f"FAIL {failure}", flush=True)
        return 1
    except grpc.RpcError as error:
        print(f"FAIL gRPC {error.code().name}: {error.details()}", flush=True)
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
