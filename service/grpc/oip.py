"""The Open Inference Protocol (KServe v2) over gRPC, beside VaeService on the same port: the
``inference.GRPCInferenceService`` messages <-> the plane's ``Inference`` (service/plane/inference.py,
which the REST binding calls too). Decode, call, encode; nothing else.
"""

import numpy as np
from google.protobuf import json_format

from vae_serve.api.oip import grpc_service_pb2 as oip_pb2
from vae_serve.api.oip import grpc_service_pb2_grpc as oip_pb2_grpc
from vae_serve.core.errors import InvalidInput
from vae_serve.service.plane.inference import FLOAT_TYPES, Inference, InputTensor

OutputTensor = oip_pb2.ModelInferResponse.InferOutputTensor
OIP_SERVICE = oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def metadata_tensor(tensor: dict) -> oip_pb2.ModelMetadataResponse.TensorMetadata:
    return oip_pb2.ModelMetadataResponse.TensorMetadata(**tensor)


def parameter_values(parameters) -> dict[str, object]:
    """A request's InferParameters as Python values (None for one that holds none)."""
    if not parameters:
        return {}
    values = {}
    for name, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[name] = None if which is None else getattr(parameter, which)
    return values


def input_tensors(request) -> list[InputTensor]:
    """The request's inputs with their bytes: ``raw_input_contents``, or the typed contents.

    Raises:
        InvalidInput: raw contents that do not pair with the inputs, or both kinds for one input.
    """
    raw = request.raw_input_contents
    # Any count of inputs but one is the plane's refusal ("exactly one input"), which says more.
    if raw and len(request.inputs) == 1 and len(raw) != 1:
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for 1 input")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input {tensor.name!r}: both contents and raw_input_contents given; send one")
            data = raw[index] if index < len(raw) else b""
        else:
            dtype = FLOAT_TYPES.get(tensor.datatype)  # another datatype is refused by the plane
            typed = tensor.contents.fp64_contents if tensor.datatype == "FP64" else tensor.contents.fp32_contents
            data = b"" if dtype is None else np.asarray(typed, dtype=dtype).tobytes()
        tensors.append(InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), data))
    return tensors


class InferenceServicer(oip_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def ServerLive(self, request, context):
        return oip_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return oip_pb2.ServerReadyResponse(ready=self.inference.ready())

    async def ModelReady(self, request, context):
        return oip_pb2.ModelReadyResponse(ready=self.inference.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return oip_pb2.ServerMetadataResponse(**self.inference.server_metadata())

    async def ModelMetadata(self, request, context):
        document = self.inference.model_metadata(request.name, request.version)
        return oip_pb2.ModelMetadataResponse(
            name=document["name"],
            versions=document["versions"],
            platform=document["platform"],
            inputs=[metadata_tensor(tensor) for tensor in document["inputs"]],
            outputs=[metadata_tensor(tensor) for tensor in document["outputs"]],
        )

    async def ModelConfig(self, request, context):
        document = self.inference.model_config(request.name, request.version)
        return oip_pb2.ModelConfigResponse(config=json_format.ParseDict(document, oip_pb2.ModelConfig()))

    async def ModelStatistics(self, request, context):
        # The plane's documents are Triton's JSON, whose field names are the message's.
        documents = self.inference.model_statistics(request.name, request.version)
        return json_format.ParseDict({"model_stats": documents}, oip_pb2.ModelStatisticsResponse())

    async def ModelInfer(self, request, context):
        result = await self.inference.infer(
            request.model_name,
            request.model_version,
            input_tensors(request),
            parameter_values(request.parameters),
            [output.name for output in request.outputs],
            context.time_remaining(),
        )
        # One constructor call for the tensors and their bytes: cheaper than adding them one by one.
        response = oip_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=result.model_version,
            id=request.id,
            outputs=[
                OutputTensor(name=spec.name, datatype=spec.datatype, shape=values.shape)
                for spec, values in result.outputs
            ],
            raw_output_contents=[values.tobytes() for _, values in result.outputs],
        )
        for name, value in result.parameters.items():
            response.parameters[name].uint64_param = value
        return response
