"""MLServer 1.7.1 custom runtime serving one VAE model (vae_encode, vae_elbo_k1 or vae_elbo_k100).

The model's name (model-settings.json "name") picks what it computes (vae_compute.MODELS); its
parameters.extra carries {"bundle": DIR, "intra_op_threads": 1, "seed": null, "log_batches": false}
(log_batches: log the row count of every batch the adaptive batcher hands over, to check
batching). run_mlserver.py writes those settings and puts this folder and bench/peers on
PYTHONPATH, so MLServer's inference workers (separate processes) import this module and
vae_compute the same way. With a seed, every worker draws the same noise stream.
"""

from __future__ import annotations

import logging

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from vae_compute import MODELS, VaeCompute

logger = logging.getLogger("mlserver.vae_runtime")


class VaeRuntime(MLModel):
    async def load(self) -> bool:
        if self.name not in MODELS:
            raise ValueError(f"model name {self.name!r} is not one of {sorted(MODELS)}")
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self._compute = VaeCompute(
            extra["bundle"], intra_op_threads=int(extra.get("intra_op_threads", 1)), seed=extra.get("seed")
        )
        self._log_batches = bool(extra.get("log_batches", False))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if [i.name for i in payload.inputs] != ["x"]:
            raise InferenceError(f"{self.name}: expected one input 'x', got {[i.name for i in payload.inputs]}")
        request_input = payload.inputs[0]
        if request_input.datatype != "FP32":
            raise InferenceError(f"{self.name}: input 'x' must be FP32, got {request_input.datatype}")
        x = NumpyCodec.decode_input(request_input)
        if self._log_batches:
            logger.info("%s: batch of %d rows", self.name, len(x))
        try:
            outputs = self._compute.run(self.name, np.asarray(x, dtype=np.float32))
        except ValueError as error:
            raise InferenceError(f"{self.name}: {error}") from None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in outputs.items()],
        )
