"""Thin rpc handlers: decode and check the request, compute off the event loop, encode the reply."""

import asyncio
import functools
import math
import secrets
import time
from concurrent.futures import Executor

import numpy as np

from service import codec, queries
from service.bundle import Bundle
from service.errors import InvalidInput, NotReady
from service.metrics import ServerMetrics
from service.registry import ModelRegistry
from service.scoring import SCORE_PARAMS, decide
from service.settings import Settings
from vae.v1 import vae_pb2, vae_pb2_grpc

SCORE_NAMES = {
    vae_pb2.SCORE_TYPE_UNSPECIFIED: "negative_iwae",
    vae_pb2.SCORE_TYPE_NEGATIVE_ELBO: "negative_elbo",
    vae_pb2.SCORE_TYPE_NEGATIVE_IWAE: "negative_iwae",
    vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR: "reconstruction_error",
}
SCORE_TYPES = {name: score_type for score_type, name in SCORE_NAMES.items() if score_type}
DEFAULT_FALSE_POSITIVE_RATE = 0.01
INFO_QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.999)


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidInput(f"{field}: {value} is out of range; allowed {low}..{high}")
    return value


def request_seed(request) -> int:
    """The request's seed, or a fresh random one (returned in the reply so the call can be replayed)."""
    return request.seed if request.HasField("seed") else secrets.randbits(53)


def model_version(bundle: Bundle) -> vae_pb2.ModelVersion:
    return vae_pb2.ModelVersion(name=bundle.manifest.name, version=bundle.manifest.version)


def input_shapes(bundle: Bundle) -> list[tuple[int, ...]]:
    """Accepted shapes of one input row: flat [D] first, then the example's natural shape."""
    flat = (bundle.manifest.input.num_features,)
    natural = tuple(bundle.manifest.input.shape)
    return [flat] if natural == flat else [flat, natural]


class VaeServicer(vae_pb2_grpc.VaeServiceServicer):
    def __init__(self, settings: Settings, metrics: ServerMetrics, executor: Executor):
        self.registry: ModelRegistry | None = None  # set once every bundle passed verification
        self.settings = settings
        self.metrics = metrics
        self.executor = executor

    def _resolve(self, model: vae_pb2.ModelRef) -> Bundle:
        if self.registry is None:
            raise NotReady("the server is still loading and verifying its models; retry shortly")
        return self.registry.resolve(model.name, model.version)

    async def _compute(self, method: str, rows: int, function, *args):
        """Run ``function(*args)`` on the inference threads; ONNX Runtime releases the GIL there."""
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(function, *args))
        finally:
            self.metrics.inference_duration.labels(method).observe(time.perf_counter() - started)
            self.metrics.examples.labels(method).inc(rows)

    def _inputs(self, request, bundle: Bundle) -> np.ndarray:
        return codec.rows_from_tensor(request.x, "x", input_shapes(bundle), self.settings.max_rows)

    def _samples_per_row(self, field: str, value: int, rows: int, low: int) -> int:
        check_range(field, value, low, self.settings.max_k)
        if rows * value > self.settings.max_row_samples:
            raise InvalidInput(
                f"{field}: {rows} rows x {value} samples = {rows * value} exceeds the limit of "
                f"{self.settings.max_row_samples} per request; send fewer rows or samples"
            )
        return value

    async def Encode(self, request, context):
        bundle = self._resolve(request.model)
        x = self._inputs(request, bundle)
        num_samples = self._samples_per_row("num_samples", request.num_samples, len(x), 0)
        seed = request_seed(request)
        z_mean, z_logvar, samples = await self._compute(
            "Encode", len(x), queries.encode, bundle.vae, x, num_samples, seed
        )
        reply = vae_pb2.EncodeResponse(
            model=model_version(bundle), z_mean=codec.to_tensor(z_mean), z_logvar=codec.to_tensor(z_logvar), seed=seed
        )
        if samples is not None:
            reply.z_samples.CopyFrom(codec.to_tensor(samples))
        return reply

    async def Decode(self, request, context):
        bundle = self._resolve(request.model)
        z = codec.rows_from_tensor(request.z, "z", [(bundle.manifest.latent_dim,)], self.settings.max_rows)
        num_samples = self._samples_per_row("num_samples", request.num_samples, len(z), 0)
        seed = request_seed(request)
        params, samples = await self._compute("Decode", len(z), queries.decode, bundle.vae, z, num_samples, seed)
        reply = vae_pb2.DecodeResponse(model=model_version(bundle), seed=seed)
        if "probs" in params:
            reply.bernoulli.probs.CopyFrom(codec.to_tensor(params["probs"]))
        else:
            reply.gaussian.mean.CopyFrom(codec.to_tensor(params["mean"]))
            reply.gaussian.scale.CopyFrom(codec.to_tensor(params["scale"]))
        if samples is not None:
            reply.x_samples.CopyFrom(codec.to_tensor(samples))
        return reply

    def _sampler(self, request, bundle: Bundle) -> tuple[queries.Sampler, int]:
        temperature = request.temperature if request.HasField("temperature") else 1.0
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInput(f"temperature: {temperature} must be a finite number > 0")
        seed = request_seed(request)
        return queries.Sampler(bundle.vae, bundle.manifest.latent_dim, temperature, seed), seed

    @staticmethod
    def _sample_reply(bundle: Bundle, samples: queries.Samples, seed: int, offset: int) -> vae_pb2.SampleResponse:
        return vae_pb2.SampleResponse(
            model=model_version(bundle),
            z=codec.to_tensor(samples.z),
            x_mean=codec.to_tensor(samples.x_mean),
            x=codec.to_tensor(samples.x),
            seed=seed,
            offset=offset,
        )

    async def Sample(self, request, context):
        bundle = self._resolve(request.model)
        count = check_range("n", request.n, 1, self.settings.max_sample_n)
        sampler, seed = self._sampler(request, bundle)
        samples = await self._compute("Sample", count, sampler.next_chunk, count)
        return self._sample_reply(bundle, samples, seed, 0)

    async def SampleStream(self, request, context):
        bundle = self._resolve(request.model)
        count = check_range("n", request.n, 1, self.settings.max_stream_sample_n)
        default_chunk = min(self.settings.default_chunk_size, self.settings.max_sample_n)
        chunk = check_range("chunk_size", request.chunk_size or default_chunk, 1, self.settings.max_sample_n)
        sampler, seed = self._sampler(request, bundle)
        for offset in range(0, count, chunk):
            rows = min(chunk, count - offset)
            samples = await self._compute("SampleStream", rows, sampler.next_chunk, rows)
            yield self._sample_reply(bundle, samples, seed, offset)

    async def Elbo(self, request, context):
        bundle = self._resolve(request.model)
        x = self._inputs(request, bundle)
        k = self._samples_per_row("k", request.k or 1, len(x), 1)
        seed = request_seed(request)
        bounds = await self._compute("Elbo", len(x), queries.elbo, bundle.vae, x, k, seed)
        nats_to_bits_per_dim = -1.0 / (x.shape[1] * math.log(2.0))
        reply = vae_pb2.ElboResponse(
            model=model_version(bundle),
            elbo=bounds.elbo,
            reconstruction=bounds.reconstruction,
            kl=bounds.kl,
            elbo_bits_per_dim=bounds.elbo * nats_to_bits_per_dim,
            k=k,
            seed=seed,
        )
        if k > 1:
            reply.iwae.extend(bounds.iwae)
            reply.iwae_standard_error.extend(bounds.iwae_standard_error)
            reply.iwae_bits_per_dim.extend(bounds.iwae * nats_to_bits_per_dim)
        return reply

    async def ScoreAnomaly(self, request, context):
        bundle = self._resolve(request.model)
        if request.score not in SCORE_NAMES:
            raise InvalidInput(f"score: unknown score type {request.score}; known: {sorted(SCORE_TYPES)}")
        name = SCORE_NAMES[request.score]
        x = self._inputs(request, bundle)
        self._samples_per_row("score samples", SCORE_PARAMS[name].get("num_samples", 1), len(x), 1)
        rate, threshold = self._threshold(request)
        seed = request_seed(request)
        scores = await self._compute("ScoreAnomaly", len(x), queries.score, bundle.vae, x, name, seed)
        decision = decide(scores, bundle.manifest.calibration.scores[name], rate, threshold)
        return vae_pb2.ScoreAnomalyResponse(
            model=model_version(bundle),
            score=SCORE_TYPES[name],
            scores=scores,
            percentile=decision.percentile,
            p_value=decision.p_value,
            is_anomaly=decision.is_anomaly.tolist(),
            threshold=decision.threshold,
            false_positive_rate=decision.false_positive_rate,
            seed=seed,
        )

    @staticmethod
    def _threshold(request) -> tuple[float | None, float | None]:
        """(false-positive rate, explicit threshold): exactly one is set."""
        which = request.WhichOneof("threshold")
        if which == "score_threshold":
            if not math.isfinite(request.score_threshold):
                raise InvalidInput(f"score_threshold: {request.score_threshold} is not a finite number")
            return None, request.score_threshold
        rate = request.false_positive_rate if which == "false_positive_rate" else DEFAULT_FALSE_POSITIVE_RATE
        if not 0.0 < rate < 1.0:
            raise InvalidInput(f"false_positive_rate: {rate} must be strictly between 0 and 1")
        return rate, None

    async def GetModelInfo(self, request, context):
        bundle = self._resolve(request.model)
        manifest = bundle.manifest
        limits = self.settings
        return vae_pb2.ModelInfo(
            model=model_version(bundle),
            input_shape=manifest.input.shape,
            num_features=manifest.input.num_features,
            latent_dim=manifest.latent_dim,
            likelihood=manifest.likelihood.name,
            created_at=manifest.created_at,
            validation=vae_pb2.SplitMetrics(
                **manifest.metrics.validation.model_dump(include=set(vae_pb2.SplitMetrics.DESCRIPTOR.fields_by_name))
            ),
            test=vae_pb2.SplitMetrics(
                **manifest.metrics.test.model_dump(include=set(vae_pb2.SplitMetrics.DESCRIPTOR.fields_by_name))
            ),
            binarization=manifest.metrics.binarization,
            calibration=[
                self._calibration_summary(name, entry, manifest)
                for name, entry in manifest.calibration.scores.items()
                if name in SCORE_TYPES
            ],
            available_versions=self.registry.versions(manifest.name),
            providers=self.registry.providers,
            max_rows=limits.max_rows,
            max_k=limits.max_k,
            max_row_samples=limits.max_row_samples,
            max_sample_n=limits.max_sample_n,
            max_stream_sample_n=limits.max_stream_sample_n,
        )

    @staticmethod
    def _calibration_summary(name: str, entry, manifest) -> vae_pb2.ScoreCalibration:
        levels = manifest.calibration.quantile_levels
        return vae_pb2.ScoreCalibration(
            score=SCORE_TYPES[name],
            num_examples=entry.num_examples,
            mean=entry.mean,
            std=entry.std,
            quantiles=[
                vae_pb2.Quantile(level=level, value=float(np.interp(level, levels, entry.quantiles)))
                for level in INFO_QUANTILE_LEVELS
            ],
        )
