"""The Open Inference Protocol (KServe v2) beside VaeService, on the same port and batchers.

Each bundle ``NAME`` appears as three OIP models, so Triton's and KServe's clients and tools can use
it without knowing vae.v1:
- ``NAME-encoder``: x [n, D] -> z_mean, z_logvar [n, L] (the encoder graph);
- ``NAME-decoder``: z [n, L] -> probs [n, D] (Bernoulli) or mean, scale [n, D] (Gaussian);
- ``NAME-elbo``: x [n, D] -> elbo, reconstruction, kl, iwae, iwae_standard_error [n] (FP64, nats),
  request parameters ``k`` (posterior samples, default 1) and ``seed`` (default: a fresh one,
  returned as the response parameter ``seed``), the same numbers as VaeService.Elbo.
An adapter over the same data plane as VaeService: the same checks, limits and dynamic batchers,
so a mixed load of both protocols still shares batches.
"""

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.api.v1 import vae_pb2
from vae_serve.core import work
from vae_serve.core.bundle import Bundle
from vae_serve.core.errors import InvalidInput, NotFound
from vae_serve.service import codec
from vae_serve.service.dataplane import DataPlane, ServedModel

OIP_SERVICE = oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
FLOAT_TYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
# The same types in vae.v1: inputs go through VaeService's codec, which rounds FP64 to float32.
WIRE_TYPES = {"FP32": vae_pb2.DATA_TYPE_FLOAT32, "FP64": vae_pb2.DATA_TYPE_FLOAT64}
CONFIG_TYPES = {"FP32": oip_pb2.TYPE_FP32, "FP64": oip_pb2.TYPE_FP64}
ELBO_OUTPUTS = ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error")
ELBO_PARAMETERS = ("k", "seed")


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


def oip_model(bundle: Bundle, part: str) -> OipModel:
    """The OIP view of one part of a bundle: its tensors, their types and row shapes."""
    features, latent = (bundle.manifest.input.num_features,), (bundle.manifest.latent_dim,)
    if part == "encoder":
        outputs = (TensorSpec("z_mean", "FP32", latent), TensorSpec("z_logvar", "FP32", latent))
        return OipModel(part, "onnxruntime_onnx", (TensorSpec("x", "FP32", features),), outputs)
    if part == "decoder":
        names = ("probs",) if bundle.manifest.likelihood.name == "bernoulli" else ("mean", "scale")
        outputs = tuple(TensorSpec(name, "FP32", features) for name in names)
        return OipModel(part, "onnxruntime_onnx", (TensorSpec("z", "FP32", latent),), outputs)
    outputs = tuple(TensorSpec(name, "FP64", ()) for name in ELBO_OUTPUTS)
    return OipModel(part, "vae-serve", (TensorSpec("x", "FP32", features),), outputs)


PARTS = ("encoder", "decoder", "elbo")


def split_model_name(name: str) -> tuple[str, str]:
    """ "digits-encoder" -> ("digits", "encoder")."""
    bundle_name, _, part = name.rpartition("-")
    if not bundle_name or part not in PARTS:
        raise NotFound(f"unknown model {name!r}; models are named <bundle>-{{{','.join(PARTS)}}}")
    return bundle_name, part


def metadata_tensor(spec: TensorSpec) -> oip_pb2.ModelMetadataResponse.TensorMetadata:
    shape = [-1, *spec.row_shape]
    return oip_pb2.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=shape)


def int_parameter(parameters, name: str, default: int | None) -> int | None:
    if name not in parameters:
        return default
    parameter = parameters[name]
    which = parameter.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"parameter {name!r}: must be an integer (int64_param or uint64_param), got {which}")
    return getattr(parameter, which)


class InferenceServicer(oip_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, ready: Callable[[], bool]) -> None:
        self.plane = plane
        self.ready = ready

    def _model(self, name: str, version: str) -> tuple[ServedModel, OipModel]:
        bundle_name, part = split_model_name(name)
        served = self.plane.resolve(bundle_name, version)
        return served, oip_model(served.bundle, part)

    async def ServerLive(self, request, context):
        return oip_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return oip_pb2.ServerReadyResponse(ready=self.ready())

    async def ModelReady(self, request, context):
        if not self.ready():
            return oip_pb2.ModelReadyResponse(ready=False)
        try:
            self._model(request.name, request.version)
        except NotFound:
            return oip_pb2.ModelReadyResponse(ready=False)
        return oip_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        return oip_pb2.ServerMetadataResponse(
            name="vae-serve", version=importlib.metadata.version("vae-serve"), extensions=["model_configuration"]
        )

    async def ModelMetadata(self, request, context):
        served, model = self._model(request.name, request.version)
        return oip_pb2.ModelMetadataResponse(
            name=request.name,
            versions=self.plane.versions(served.bundle.manifest.name),
            platform=model.platform,
            inputs=[metadata_tensor(spec) for spec in model.inputs],
            outputs=[metadata_tensor(spec) for spec in model.outputs],
        )

    async def ModelConfig(self, request, context):
        _, model = self._model(request.name, request.version)
        settings = self.plane.settings
        return oip_pb2.ModelConfigResponse(
            config=oip_pb2.ModelConfig(
                name=request.name,
                platform=model.platform,
                backend="onnxruntime" if model.platform == "onnxruntime_onnx" else "python",
                max_batch_size=settings.max_rows,
                input=[
                    oip_pb2.ModelInput(name=spec.name, data_type=CONFIG_TYPES[spec.datatype], dims=spec.row_shape)
                    for spec in model.inputs
                ],
                output=[
                    oip_pb2.ModelOutput(name=spec.name, data_type=CONFIG_TYPES[spec.datatype], dims=spec.row_shape)
                    for spec in model.outputs
                ],
                dynamic_batching=oip_pb2.ModelDynamicBatching(
                    max_queue_delay_microseconds=round(settings.max_batch_wait_s * 1e6)
                ),
            )
        )

    async def ModelInfer(self, request, context):
        served, model = self._model(request.model_name, request.model_version)
        rows = self._input_rows(request, served, model)
        # Triton's tools add their own hints ("triton_enable_empty_final_response"); they mean
        # nothing here. Any other unknown parameter is a mistake worth reporting.
        parameters = {key: value for key, value in request.parameters.items() if not key.startswith("triton_")}
        allowed = ELBO_PARAMETERS if model.part == "elbo" else ()
        if unknown := sorted(set(parameters) - set(allowed)):
            raise InvalidInput(f"parameters {unknown} not understood by {request.model_name}; known: {list(allowed)}")
        outputs, response_parameters = await getattr(self, f"_infer_{model.part}")(served, rows, parameters, context)
        response = oip_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=served.bundle.manifest.version,
            id=request.id,
            parameters=response_parameters,
        )
        for spec in self._requested(request, model):
            values = np.ascontiguousarray(outputs[spec.name], dtype=FLOAT_TYPES[spec.datatype])
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=values.shape)
            response.raw_output_contents.append(values.tobytes())
        return response

    def _input_rows(self, request, served: ServedModel, model: OipModel) -> np.ndarray:
        """The one input tensor as float32 rows, through VaeService's own checks."""
        spec = model.inputs[0]
        if len(request.inputs) != 1 or request.inputs[0].name != spec.name:
            names = [tensor.name for tensor in request.inputs]
            raise InvalidInput(f"{request.model_name} takes exactly one input named {spec.name!r}, got {names}")
        tensor = request.inputs[0]
        if tensor.datatype not in FLOAT_TYPES:
            raise InvalidInput(f"input {spec.name!r}: datatype {tensor.datatype!r} not supported; send FP32 (or FP64)")
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise InvalidInput(f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input")
            if tensor.HasField("contents"):
                raise InvalidInput(f"input {spec.name!r}: both contents and raw_input_contents given; send one")
            data = request.raw_input_contents[0]
            if len(data) % FLOAT_TYPES[tensor.datatype].itemsize:
                raise InvalidInput(f"input {spec.name!r}: {len(data)} bytes is not a whole number of {tensor.datatype}")
        else:
            typed = tensor.contents.fp32_contents if tensor.datatype == "FP32" else tensor.contents.fp64_contents
            data = np.asarray(typed, dtype=FLOAT_TYPES[tensor.datatype]).tobytes()
        shaped = vae_pb2.Tensor(shape=tensor.shape, data=data, dtype=WIRE_TYPES[tensor.datatype])
        max_rows = self.plane.limits.max_rows
        return codec.rows_from_tensor(
            shaped, spec.name, served.inputs if spec.name == "x" else served.latents, max_rows
        )

    @staticmethod
    def _requested(request, model: OipModel) -> list[TensorSpec]:
        by_name = {spec.name: spec for spec in model.outputs}
        if not request.outputs:
            return list(model.outputs)
        unknown = [output.name for output in request.outputs if output.name not in by_name]
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown} of {request.model_name}; it has {list(by_name)}")
        return [by_name[output.name] for output in request.outputs]

    async def _infer_encoder(self, served: ServedModel, x: np.ndarray, parameters, context):
        item = work.EncodeItem(x)
        z_mean, z_logvar, _ = await self.plane.run(served, item, "ModelInfer", context.time_remaining())
        return {"z_mean": z_mean, "z_logvar": z_logvar}, {}

    async def _infer_decoder(self, served: ServedModel, z: np.ndarray, parameters, context):
        params, _ = await self.plane.run(served, work.DecodeItem(z), "ModelInfer", context.time_remaining())
        return params, {}

    async def _infer_elbo(self, served: ServedModel, x: np.ndarray, parameters, context):
        k = self.plane.limits.samples_per_row("k", int_parameter(parameters, "k", 1), len(x), 1)
        seed = int_parameter(parameters, "seed", None)
        seed = codec.fresh_seed() if seed is None else seed
        if not 0 <= seed < 2**64:
            raise InvalidInput(f"parameter 'seed': {seed} must be in 0..2^64-1")
        bounds = await self.plane.run(served, work.BoundsItem(x, k, seed), "ModelInfer", context.time_remaining())
        outputs = {name: getattr(bounds, name) for name in ELBO_OUTPUTS}
        return outputs, {"seed": oip_pb2.InferParameter(uint64_param=seed)}
