"""The malformed-input battery: every rpc of both protocols, crossed with every defect that applies
to it, each with the status and message it must get. Built for a server running with the limits of
tests/test_server_errors.py (16 rows, k <= 50, 400 row samples, Sample n <= 64, stream n <= 200)
and the digits bundle (64 features, 8 latents, Bernoulli).
"""

import grpc
import numpy as np

from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.v1 import vae_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FEATURES, LATENT = 64, 8


def tensor(shape, data: bytes | None = None, fill: float = 0.5) -> vae_pb2.Tensor:
    if data is None:
        data = np.full(shape, fill, dtype="<f4").tobytes()
    return vae_pb2.Tensor(shape=shape, data=data)


def with_value(value: float, width: int, row: int = 1) -> vae_pb2.Tensor:
    values = np.full((3, width), 0.5, dtype="<f4")
    values[row, 5] = value
    return tensor([3, width], values.tobytes())


def tensor_defects(width: int, field: str) -> list[tuple[str, vae_pb2.Tensor, str]]:
    """(name, tensor, message pattern) for one input field of rows of ``width``."""
    good = np.full((3, width), 0.5, dtype="<f4").tobytes()
    return [
        ("missing", vae_pb2.Tensor(), rf"{field}: missing tensor"),
        ("empty batch", tensor([0, width], b""), rf"{field}: empty batch"),
        ("rank 1", tensor([width]), r"does not fit this model"),
        ("rank 3", tensor([2, width, 1]), r"does not fit this model"),
        ("leading 1", tensor([1, 1, width]), r"does not fit this model"),
        ("width 1", tensor([3, 1]), r"shape \[3, 1\] does not fit"),
        ("width - 1", tensor([3, width - 1]), r"does not fit"),
        ("width + 1", tensor([3, width + 1]), r"does not fit"),
        ("width x 2", tensor([3, 2 * width]), r"does not fit"),
        ("negative dim", vae_pb2.Tensor(shape=[2, -width]), r"does not fit"),
        ("zero width", tensor([2, 0], b""), r"does not fit"),
        ("negative rows", vae_pb2.Tensor(shape=[-3, width]), r"does not fit"),
        ("17 rows", tensor([17, width]), r"17 rows exceeds the limit of 16"),
        ("2^40 rows", vae_pb2.Tensor(shape=[2**40, width]), r"1099511627776 rows exceeds the limit"),
        ("1 byte short", tensor([3, width], good[:-1]), r"bytes of data, shape \[3, \d+\] needs"),
        ("4 bytes short", tensor([3, width], good[:-4]), r"bytes of data"),
        ("4 bytes long", tensor([3, width], good + b"\0" * 4), r"bytes of data"),
        ("no bytes", tensor([3, width], b""), r"0 bytes of data"),
        ("float64 bytes", tensor([3, width], np.zeros((3, width)).tobytes()), r"needs \d+ \(float32"),
        ("nan row 0", with_value(np.nan, width, 0), r"non-finite value \(NaN or infinity\) in row 0"),
        ("nan row 2", with_value(np.nan, width, 2), r"non-finite value .* in row 2"),
        ("inf", with_value(np.inf, width), r"non-finite value .* in row 1"),
        ("-inf", with_value(-np.inf, width), r"non-finite value .* in row 1"),
        ("all inf", tensor([3, width], np.full((3, width), np.inf, "<f4").tobytes()), r"non-finite"),
    ]


# The digits bundle takes raw grey levels 0..16 (its preprocessing maps them to [0, 1]).
RANGE_DEFECTS = [
    ("just above 16", with_value(16.001, FEATURES), r"outside \[0, 16\], the range of this Bernoulli model's raw data"),
    ("just below 0", with_value(-0.001, FEATURES), r"outside \[0, 16\].*maps that range onto \[0, 1\]"),
    ("huge", with_value(1e30, FEATURES), r"1e\+30 in row 1, feature 5 is outside"),
    ("255 pixel", with_value(255.0, FEATURES), r"value 255 in row 1"),
]

X_RPCS = {
    "Encode": lambda x: vae_pb2.EncodeRequest(x=x),
    "Elbo": lambda x: vae_pb2.ElboRequest(x=x, k=2),
    "ScoreAnomaly": lambda x: vae_pb2.ScoreAnomalyRequest(x=x, score=vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR),
}
GOOD_REQUESTS = {
    "Encode": vae_pb2.EncodeRequest(x=tensor([3, FEATURES])),
    "Decode": vae_pb2.DecodeRequest(z=tensor([3, LATENT], fill=0.1)),
    "Sample": vae_pb2.SampleRequest(n=4),
    "SampleStream": vae_pb2.SampleRequest(n=4),
    "Elbo": vae_pb2.ElboRequest(x=tensor([3, FEATURES]), k=2),
    "ScoreAnomaly": vae_pb2.ScoreAnomalyRequest(x=tensor([3, FEATURES]), score=vae_pb2.SCORE_TYPE_NEGATIVE_ELBO),
    "GetModelInfo": vae_pb2.GetModelInfoRequest(),
    "GetMonitoring": vae_pb2.GetMonitoringRequest(),
    "Interpolate": vae_pb2.InterpolateRequest(x_start=tensor([3, FEATURES]), z_end=tensor([3, LATENT]), steps=4),
}
MODEL_NAMES = [
    "mnist",
    "../../etc",
    "/etc/passwd",
    "digits/../digits",
    "DIGITS",
    "d" * 300,
    "digits\x00",
    "ünïcode",
    " digits",
]
MODEL_VERSIONS = ["7", "../1", "-1", "1.0", "01x"]


def with_model(rpc: str, name: str, version: str):
    request = type(GOOD_REQUESTS[rpc])()
    request.CopyFrom(GOOD_REQUESTS[rpc])
    request.model.CopyFrom(vae_pb2.ModelRef(name=name, version=version))
    return request


def vae_cases() -> list[tuple[str, str, object, grpc.StatusCode, str]]:
    cases = []
    for rpc, build in X_RPCS.items():
        for name, x, pattern in tensor_defects(FEATURES, "x") + RANGE_DEFECTS:
            cases.append((f"{rpc} x {name}", rpc, build(x), INVALID, pattern))
    for name, z, pattern in tensor_defects(LATENT, "z"):
        cases.append((f"Decode z {name}", "Decode", vae_pb2.DecodeRequest(z=z), INVALID, pattern))
    for name, x, pattern in tensor_defects(FEATURES, "x_start") + RANGE_DEFECTS:
        request = vae_pb2.InterpolateRequest(x_start=x, z_end=tensor([3, LATENT]), steps=4)
        cases.append((f"Interpolate x_start {name}", "Interpolate", request, INVALID, pattern))
    for name, z, pattern in tensor_defects(LATENT, "z_end")[::3]:
        request = vae_pb2.InterpolateRequest(z_start=tensor([3, LATENT]), z_end=z, steps=4)
        cases.append((f"Interpolate z_end {name}", "Interpolate", request, INVALID, pattern))
    for rpc in GOOD_REQUESTS:
        for name in MODEL_NAMES:
            cases.append((f"{rpc} model {name[:12]!r}", rpc, with_model(rpc, name, ""), NOT_FOUND, r"unknown model"))
        for version in MODEL_VERSIONS:
            pattern = rf"no version {version!r}".replace(".", r"\.")
            cases.append((f"{rpc} version {version!r}", rpc, with_model(rpc, "digits", version), NOT_FOUND, pattern))
    x3, x10, x16 = tensor([3, FEATURES]), tensor([10, FEATURES]), tensor([16, FEATURES])
    z16 = tensor([16, LATENT], fill=0.1)
    cases += [
        ("Elbo k 51", "Elbo", vae_pb2.ElboRequest(x=x3, k=51), INVALID, r"k: 51 is out of range; allowed 1\.\.50"),
        ("Elbo k max uint32", "Elbo", vae_pb2.ElboRequest(x=x3, k=2**32 - 1), INVALID, r"k: 4294967295 is out of"),
        ("Elbo rows x k", "Elbo", vae_pb2.ElboRequest(x=x10, k=50), INVALID, r"10 rows x 50 samples = 500"),
        ("Elbo 16 x 26", "Elbo", vae_pb2.ElboRequest(x=x16, k=26), INVALID, r"16 rows x 26 samples = 416"),
        ("Encode samples 51", "Encode", vae_pb2.EncodeRequest(x=x3, num_samples=51), INVALID, r"num_samples: 51"),
        ("Encode samples huge", "Encode", vae_pb2.EncodeRequest(x=x3, num_samples=10**6), INVALID, r"num_samples"),
        ("Encode rows x samples", "Encode", vae_pb2.EncodeRequest(x=x16, num_samples=30), INVALID, r"16 rows x 30"),
        ("Decode samples 51", "Decode", vae_pb2.DecodeRequest(z=z16, num_samples=51), INVALID, r"num_samples: 51"),
        ("Decode rows x samples", "Decode", vae_pb2.DecodeRequest(z=z16, num_samples=30), INVALID, r"16 rows x 30"),
        (
            "ScoreAnomaly iwae cost",
            "ScoreAnomaly",
            vae_pb2.ScoreAnomalyRequest(x=x10, score=2),
            INVALID,
            r"score samples: 100",
        ),
    ]
    z3 = tensor([3, LATENT], fill=0.1)
    for name, fields, pattern in [
        ("no start", {"z_end": z3, "steps": 4}, r"start: missing; set x_start \(inputs\) or z_start"),
        ("no end", {"x_start": x3, "steps": 4}, r"end: missing"),
        ("rows differ", {"z_start": z3, "z_end": z16, "steps": 4}, r"3 rows at the start, 16 at the end"),
        ("steps 0", {"z_start": z3, "z_end": z3}, r"steps: 0 is out of range; allowed 2\.\.50"),
        ("steps 1", {"z_start": z3, "z_end": z3, "steps": 1}, r"steps: 1 is out of range"),
        ("steps 51", {"z_start": z3, "z_end": z3, "steps": 51}, r"steps: 51 is out of range"),
        ("rows x steps", {"z_start": z16, "z_end": z16, "steps": 26}, r"16 rows x 26 samples = 416"),
        ("draws", {"z_start": z3, "z_end": z3, "steps": 10, "num_samples": 14}, r"30 rows x 14 samples = 420"),
        ("path 2", {"z_start": z3, "z_end": z3, "steps": 4, "path": 2}, r"path: unknown interpolation path 2"),
        ("path -1", {"z_start": z3, "z_end": z3, "steps": 4, "path": -1}, r"path: unknown interpolation path -1"),
    ]:
        request = vae_pb2.InterpolateRequest(**fields)
        cases.append((f"Interpolate {name}", "Interpolate", request, INVALID, pattern))
    for rpc, limit in (("Sample", 64), ("SampleStream", 200)):
        cases += [
            (f"{rpc} n 0", rpc, vae_pb2.SampleRequest(n=0), INVALID, rf"n: 0 is out of range; allowed 1\.\.{limit}"),
            (f"{rpc} n limit+1", rpc, vae_pb2.SampleRequest(n=limit + 1), INVALID, rf"n: {limit + 1} is out of range"),
            (f"{rpc} n max", rpc, vae_pb2.SampleRequest(n=2**32 - 1), INVALID, r"n: 4294967295 is out of range"),
        ]
        for value in (0.0, -1.0, float("nan"), float("inf"), float("-inf"), -0.0):
            request = vae_pb2.SampleRequest(n=2, temperature=value)
            cases.append((f"{rpc} temperature {value}", rpc, request, INVALID, r"temperature: .* must be a finite"))
    for chunk in (65, 10**6, 2**32 - 1):
        request = vae_pb2.SampleRequest(n=100, chunk_size=chunk)
        cases.append((f"SampleStream chunk {chunk}", "SampleStream", request, INVALID, rf"chunk_size: {chunk} is out"))
    # The first number past the enum's last value, whatever scores it holds.
    past_last = max(vae_pb2.ScoreType.values()) + 1
    for score in (past_last, 99, -1, 2**31 - 1):
        request = vae_pb2.ScoreAnomalyRequest(x=x3, score=score)
        cases.append((f"score type {score}", "ScoreAnomaly", request, INVALID, rf"unknown score type {score}"))
    for rate in (0.0, 1.0, -0.5, 1.5, float("nan"), float("inf")):
        request = vae_pb2.ScoreAnomalyRequest(x=x3, score=3, false_positive_rate=rate)
        cases.append((f"fpr {rate}", "ScoreAnomaly", request, INVALID, r"false_positive_rate: .* strictly between"))
    for threshold in (float("nan"), float("inf"), float("-inf")):
        request = vae_pb2.ScoreAnomalyRequest(x=x3, score=3, score_threshold=threshold)
        cases.append((f"threshold {threshold}", "ScoreAnomaly", request, INVALID, r"score_threshold: .* not a finite"))
    return cases


def infer(model: str, name: str, values, datatype: str = "FP32", shape=None, **parameters):
    values = np.ascontiguousarray(values, dtype="<f4")
    request = oip_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=values.shape if shape is None else shape)
    request.raw_input_contents.append(values.tobytes())
    for key, value in parameters.items():
        request.parameters[key].CopyFrom(value)
    return request


def oip_cases() -> list[tuple[str, str, object, grpc.StatusCode, str]]:
    rows = np.full((3, FEATURES), 0.5, np.float32)
    cases = []
    for datatype in ("INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "FP16", "BF16", "", "fp32"):
        cases.append((f"OIP datatype {datatype!r}", "ModelInfer", infer("digits-encoder", "x", rows, datatype),
                      INVALID, r"datatype .* not supported"))  # fmt: skip
    for shape, pattern in (
        ([3, 10], r"bytes of data|does not fit"),
        ([FEATURES * 3], r"does not fit"),
        ([3, FEATURES, 1], r"does not fit"),
        ([0, FEATURES], r"empty batch"),
        ([-1, FEATURES], r"does not fit"),
        ([17, FEATURES], r"17 rows exceeds"),
        ([], r"missing tensor"),
    ):
        cases.append(
            (f"OIP shape {shape}", "ModelInfer", infer("digits-encoder", "x", rows, shape=shape), INVALID, pattern)
        )
    two_raw = infer("digits-encoder", "x", rows)
    two_raw.raw_input_contents.append(b"\0" * 4)
    both = infer("digits-encoder", "x", rows)
    both.inputs[0].contents.fp32_contents.append(0.5)
    no_data = oip_pb2.ModelInferRequest(model_name="digits-encoder")
    no_data.inputs.add(name="x", datatype="FP32", shape=[3, FEATURES])
    odd_bytes = infer("digits-encoder", "x", rows)
    odd_bytes.raw_input_contents[0] = odd_bytes.raw_input_contents[0][:-3]
    wrong_output = infer("digits-decoder", "z", np.zeros((2, LATENT)))
    wrong_output.outputs.add(name="logits")
    no_inputs = oip_pb2.ModelInferRequest(model_name="digits-elbo")
    nan = rows.copy()
    nan[1, 2] = np.nan
    above = rows.copy()
    above[0, 0] = 17.0
    int_param = oip_pb2.InferParameter
    cases += [
        ("OIP two raw contents", "ModelInfer", two_raw, INVALID, r"raw_input_contents has 2 entries for 1 input"),
        ("OIP raw and typed", "ModelInfer", both, INVALID, r"both contents and raw_input_contents"),
        ("OIP no data", "ModelInfer", no_data, INVALID, r"0 bytes of data"),
        ("OIP odd bytes", "ModelInfer", odd_bytes, INVALID, r"not a whole number of FP32"),
        ("OIP unknown output", "ModelInfer", wrong_output, INVALID, r"unknown outputs \['logits'\]"),
        ("OIP no inputs", "ModelInfer", no_inputs, INVALID, r"exactly one input named 'x', got \[\]"),
        ("OIP wrong input name", "ModelInfer", infer("digits-decoder", "x", rows), INVALID, r"named 'z'"),
        ("OIP z width", "ModelInfer", infer("digits-decoder", "z", rows), INVALID, r"z: shape \[3, 64\] does not fit"),
        ("OIP nan", "ModelInfer", infer("digits-elbo", "x", nan), INVALID, r"non-finite value .* in row 1"),
        ("OIP above 16", "ModelInfer", infer("digits-elbo", "x", above), INVALID, r"value 17 in row 0, feature 0"),
        ("OIP k 0", "ModelInfer", infer("digits-elbo", "x", rows, k=int_param(int64_param=0)), INVALID, r"k: 0 is out"),
        ("OIP k 51", "ModelInfer", infer("digits-elbo", "x", rows, k=int_param(int64_param=51)), INVALID, r"k: 51"),
        (
            "OIP k rows",
            "ModelInfer",
            infer("digits-elbo", "x", np.full((16, FEATURES), 0.5), k=int_param(int64_param=30)),
            INVALID,
            r"16 rows x 30 samples",
        ),
        (
            "OIP k text",
            "ModelInfer",
            infer("digits-elbo", "x", rows, k=int_param(string_param="3")),
            INVALID,
            r"parameter 'k': must be an integer",
        ),
        (
            "OIP k float",
            "ModelInfer",
            infer("digits-elbo", "x", rows, k=int_param(double_param=3.0)),
            INVALID,
            r"must be an integer",
        ),
        (
            "OIP seed negative",
            "ModelInfer",
            infer("digits-elbo", "x", rows, seed=int_param(int64_param=-1)),
            INVALID,
            r"seed.*-1 must be in",
        ),
        (
            "OIP unknown parameter",
            "ModelInfer",
            infer("digits-elbo", "x", rows, temperature=int_param(double_param=1)),
            INVALID,
            r"parameters \['temperature'\] not understood",
        ),
        (
            "OIP encoder k",
            "ModelInfer",
            infer("digits-encoder", "x", rows, k=int_param(int64_param=2)),
            INVALID,
            r"not understood by digits-encoder",
        ),
    ]
    for model in ("digits", "digits-", "-encoder", "digits-sampler", "other-elbo", "../digits-elbo", "digits-elbo "):
        cases.append((f"OIP model {model!r}", "ModelInfer", infer(model, "x", rows), NOT_FOUND, r"unknown model"))
    versioned = infer("digits-elbo", "x", rows)
    versioned.model_version = "9"
    cases.append(("OIP version 9", "ModelInfer", versioned, NOT_FOUND, r"no version '9'"))
    for rpc, request_type in (
        ("ModelMetadata", oip_pb2.ModelMetadataRequest),
        ("ModelConfig", oip_pb2.ModelConfigRequest),
        ("ModelStatistics", oip_pb2.ModelStatisticsRequest),
    ):
        for name, version, pattern in (("nothing", "", r"unknown model"), ("digits-vae", "", r"unknown model"),
                                       ("digits-encoder", "3", r"no version '3'")):  # fmt: skip
            cases.append((f"{rpc} {name}:{version}", rpc, request_type(name=name, version=version), NOT_FOUND, pattern))
    statistics = oip_pb2.ModelStatisticsRequest(version="1")  # every model's statistics cannot take a version
    cases.append(("ModelStatistics version alone", "ModelStatistics", statistics, INVALID, r"without a model name"))
    return cases


CASES = vae_cases() + oip_cases()
