"""The Open Inference Protocol (KServe v2) over the plane's operations, for both of its bindings
(gRPC: service/grpc/oip.py, REST: service/rest/): models, metadata, configuration and infer, in
plain Python values and numpy arrays.

Each bundle ``NAME`` appears as three OIP models, so Triton's and KServe's clients and tools can use
it without knowing vae.v1:
- ``NAME-encoder``: x [n, D] -> z_mean, z_logvar [n, L] (the encoder graph);
- ``NAME-decoder``: z [n, L] -> probs [n, D] (Bernoulli) or mean, scale [n, D] (Gaussian);
- ``NAME-elbo``: x [n, D] -> elbo, reconstruction, kl, iwae, iwae_standard_error [n] (FP64, nats),
  request parameters ``k`` (posterior samples, default 1) and ``seed`` (default: a fresh one,
  returned as the response parameter ``seed``), the same numbers as VaeService.Elbo.
The same operations as VaeService: the same checks, limits and dynamic batchers, so a mixed load of
every protocol still shares batches. Each ModelInfer call is counted in Triton's statistics extension
(``model_statistics``, service/plane/statistics.py) under its OIP model and the version that answered;
VaeService calls are not counted there.
"""

import asyncio
import functools
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vae_serve.core.bundle import Bundle
from vae_serve.core.errors import InvalidInput, NotFound, NotReady
from vae_serve.service.plane.dataplane import NOT_LOADED, ServedModel
from vae_serve.service.plane.operations import Operations
from vae_serve.service.plane.rows import array_from_bytes
from vae_serve.service.plane.statistics import CallTimes, InferenceStatistics, RunTimes, timing
from vae_serve.service.settings import Settings

FLOAT_TYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
ELBO_OUTPUTS = ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error")
ELBO_PARAMETERS = ("k", "seed")
PARTS = ("encoder", "decoder", "elbo")
TRITON_HINTS = "triton_"  # Triton's tools add their own parameters; they mean nothing here
METHOD = "ModelInfer"  # the metric series an infer call is counted in, whichever binding


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    row_shape: tuple[int, ...]  # one row's shape: the tensor is [n, *row_shape]


@dataclass(frozen=True)
class OipModel:
    part: str  # "encoder", "decoder" or "elbo"
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class InputTensor:
    """One input of an infer request as its binding read it: little-endian bytes of ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class InferResult:
    model_version: str
    outputs: list[tuple[TensorSpec, np.ndarray]]  # contiguous arrays of each spec's datatype
    parameters: dict[str, int]  # response parameters ("seed" of an elbo call)


def oip_model(bundle: Bundle, part: str) -> OipModel:
    """The OIP view of one part of a bundle: its tensors, their types and row shapes."""
    manifest = bundle.manifest
    return _oip_model(part, manifest.input.num_features, manifest.latent_dim, manifest.likelihood.name)


# The view depends on these four facts alone, and an infer call needs it every time: built once per
# kind of model, not once per call (7 us of the OIP binding's extra cost per call, bench/oip_handler.py).
@functools.lru_cache(maxsize=256)
def _oip_model(part: str, num_features: int, latent_dim: int, likelihood: str) -> OipModel:
    features, latent = (num_features,), (latent_dim,)
    if part == "encoder":
        outputs = (TensorSpec("z_mean", "FP32", latent), TensorSpec("z_logvar", "FP32", latent))
        return OipModel(part, "onnxruntime_onnx", (TensorSpec("x", "FP32", features),), outputs)
    if part == "decoder":
        names = ("probs",) if likelihood == "bernoulli" else ("mean", "scale")
        outputs = tuple(TensorSpec(name, "FP32", features) for name in names)
        return OipModel(part, "onnxruntime_onnx", (TensorSpec("z", "FP32", latent),), outputs)
    outputs = tuple(TensorSpec(name, "FP64", ()) for name in ELBO_OUTPUTS)
    return OipModel(part, "vae-serve", (TensorSpec("x", "FP32", features),), outputs)


@functools.lru_cache(maxsize=1024)  # a name that raises is not kept, so unknown names cannot fill it
def split_model_name(name: str) -> tuple[str, str]:
    """ "digits-encoder" -> ("digits", "encoder")."""
    bundle_name, _, part = name.rpartition("-")
    if not bundle_name or part not in PARTS:
        raise NotFound(f"unknown model {name!r}; models are named <bundle>-{{{','.join(PARTS)}}}")
    return bundle_name, part


def int_parameter(parameters: dict[str, object], name: str, default: int | None) -> int | None:
    """An integer request parameter, or ``default`` when absent.

    Raises:
        InvalidInput: the parameter is not an integer.
    """
    if name not in parameters:
        return default
    value = parameters[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"parameter {name!r}: must be an integer, got {type(value).__name__} {value!r}")
    return value


def _tensors(specs: tuple[TensorSpec, ...]) -> list[dict]:
    return [{"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.row_shape]} for spec in specs]


def _config_tensors(specs: tuple[TensorSpec, ...]) -> list[dict]:
    # Triton's names; a row of shape () has no dims, and Triton's JSON then leaves them out.
    return [
        {
            "name": spec.name,
            "data_type": f"TYPE_{spec.datatype}",
            **({"dims": list(spec.row_shape)} if spec.row_shape else {}),
        }
        for spec in specs
    ]


class Inference:
    """The OIP's models and calls over ``operations``; ``ready()``: whether the server serves."""

    def __init__(self, operations: Operations, settings: Settings, ready: Callable[[], bool]) -> None:
        self.operations = operations
        self.settings = settings
        self.ready = ready
        self.statistics = InferenceStatistics()

    def model(self, name: str, version: str) -> tuple[ServedModel, OipModel]:
        """The served version and the OIP model that ``name`` (``<bundle>-<part>``) names."""
        bundle_name, part = split_model_name(name)
        served = self.operations.model(bundle_name, version)
        return served, oip_model(served.bundle, part)

    def model_ready(self, name: str, version: str) -> bool:
        if not self.ready():
            return False
        try:
            self.model(name, version)
        except NotFound:
            return False
        return True

    @staticmethod
    def server_metadata() -> dict:
        version = importlib.metadata.version("vae-serve")
        return {"name": "vae-serve", "version": version, "extensions": ["model_configuration", "statistics"]}

    def model_metadata(self, name: str, version: str) -> dict:
        served, model = self.model(name, version)
        return {
            "name": name,
            "versions": self.operations.plane.versions(served.bundle.manifest.name),
            "platform": model.platform,
            "inputs": _tensors(model.inputs),
            "outputs": _tensors(model.outputs),
        }

    def model_config(self, name: str, version: str) -> dict:
        """Triton's model configuration extension, with Triton's field names."""
        _, model = self.model(name, version)
        delay_us = round(self.settings.max_batch_wait_s * 1e6)
        return {
            "name": name,
            "platform": model.platform,
            "max_batch_size": self.settings.max_rows,
            "input": _config_tensors(model.inputs),
            "output": _config_tensors(model.outputs),
            "dynamic_batching": {"max_queue_delay_microseconds": delay_us} if delay_us else {},
            "backend": "onnxruntime" if model.platform == "onnxruntime_onnx" else "python",
        }

    async def infer(
        self,
        name: str,
        version: str,
        inputs: list[InputTensor],
        parameters: dict[str, object],
        outputs: list[str],
        timeout_s: float | None,
    ) -> InferResult:
        """One infer call: checks, the operation of the model's part, the outputs asked for (all
        when ``outputs`` is empty); counted in the model version's statistics, success or failure.

        Raises:
            NotFound: no such model; InvalidInput: anything about the request that does not fit it.
        """
        began = time.perf_counter_ns()
        served, model = self.model(name, version)  # an unknown model has no statistics to count in
        served_version = served.bundle.manifest.version
        run = RunTimes()
        asked = timing.set(run)  # the batcher fills in this call's queue wait and batch run
        try:
            rows = self._input_rows(name, served, model, inputs)
            if parameters:
                parameters = {key: value for key, value in parameters.items() if not key.startswith(TRITON_HINTS)}
                allowed = ELBO_PARAMETERS if model.part == "elbo" else ()
                if unknown := sorted(set(parameters) - set(allowed)):
                    raise InvalidInput(f"parameters {unknown} not understood by {name}; known: {list(allowed)}")
            requested = self._requested(name, model, outputs)
            prepared = time.perf_counter_ns()
            values, response_parameters = await self._run(served, model.part, rows, parameters, timeout_s)
            answered = time.perf_counter_ns()
            arrays = [
                (spec, np.ascontiguousarray(values[spec.name], dtype=FLOAT_TYPES[spec.datatype])) for spec in requested
            ]
        except (Exception, asyncio.CancelledError):
            self.statistics.failed(name, served_version, time.perf_counter_ns() - began)
            raise
        finally:
            timing.reset(asked)
        ended = time.perf_counter_ns()
        times = CallTimes(ended - began, prepared - began, ended - answered, run)
        self.statistics.succeeded(name, served_version, len(rows), times)
        return InferResult(served_version, arrays, response_parameters)

    def model_statistics(self, name: str, version: str) -> list[dict]:
        """Triton's statistics extension: a ``$model_stat`` document per OIP model version asked for.

        ``name`` empty: every model's versions; ``version`` empty: every version of ``name``.

        Raises:
            NotFound: no such model or version; InvalidInput: a version without a model name;
            NotReady: the server is still loading its models.
        """
        plane = self.operations.plane
        if not plane.ready:
            raise NotReady(NOT_LOADED)
        if name:
            served, _ = self.model(name, version)
            bundle_name = served.bundle.manifest.name
            versions = [served.bundle.manifest.version] if version else plane.versions(bundle_name)
            return self.statistics.documents([(name, each) for each in versions])
        if version:
            raise InvalidInput(f"version {version!r} given without a model name; name the model, or leave both empty")
        served = [
            (f"{bundle_name}-{part}", each)
            for bundle_name in sorted(plane.models())
            for part in sorted(PARTS)
            for each in plane.versions(bundle_name)
        ]
        self.statistics.keep_only(served)  # the versions unloaded since: their statistics end with them
        return self.statistics.documents(served)

    def _input_rows(self, name: str, served: ServedModel, model: OipModel, inputs: list[InputTensor]) -> np.ndarray:
        spec = model.inputs[0]
        if len(inputs) != 1 or inputs[0].name != spec.name:
            raise InvalidInput(f"{name} takes exactly one input named {spec.name!r}, got {[t.name for t in inputs]}")
        tensor = inputs[0]
        dtype = FLOAT_TYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(f"input {spec.name!r}: datatype {tensor.datatype!r} not supported; send FP32 (or FP64)")
        if len(tensor.data) % dtype.itemsize:
            raise InvalidInput(
                f"input {spec.name!r}: {len(tensor.data)} bytes is not a whole number of {tensor.datatype}"
            )
        row_format = served.inputs if spec.name == "x" else served.latents
        max_rows = self.operations.limits.max_rows
        return array_from_bytes(spec.name, tensor.data, dtype, tensor.shape, row_format, max_rows)

    @staticmethod
    def _requested(name: str, model: OipModel, outputs: list[str]) -> list[TensorSpec]:
        if not outputs:
            return list(model.outputs)
        by_name = {spec.name: spec for spec in model.outputs}
        if unknown := [output for output in outputs if output not in by_name]:
            raise InvalidInput(f"unknown outputs {unknown} of {name}; it has {list(by_name)}")
        return [by_name[output] for output in outputs]

    async def _run(self, served: ServedModel, part: str, rows: np.ndarray, parameters: dict, timeout_s):
        operations = self.operations
        if part == "encoder":
            encoded = await operations.encode(served, rows, 0, 0, METHOD, timeout_s)
            return {"z_mean": encoded.z_mean, "z_logvar": encoded.z_logvar}, {}
        if part == "decoder":
            return (await operations.decode(served, rows, 0, 0, METHOD, timeout_s)).params, {}
        k = int_parameter(parameters, "k", 1)
        seed = int_parameter(parameters, "seed", None)
        bounds = await operations.bounds(served, rows, k, seed, METHOD, timeout_s)
        return {name: getattr(bounds.estimates, name) for name in ELBO_OUTPUTS}, {"seed": bounds.seed}
