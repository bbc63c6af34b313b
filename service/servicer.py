"""Thin rpc handlers: decode and check the request, compute off the event loop, encode the reply."""

import asyncio
import functools
import math
import secrets
from concurrent.futures import Executor

import numpy as np

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core import work
from vae_serve.core.bundle import Bundle
from vae_serve.core.errors import InvalidInput, NotCalibrated, NotReady
from vae_serve.core.scoring import SCORE_PARAMS, decide
from vae_serve.service import codec
from vae_serve.service.batching import DynamicBatcher
from vae_serve.service.metrics import ServerMetrics
from vae_serve.service.registry import ModelRegistry
from vae_serve.service.settings import Settings

BATCH_FUNCTIONS = {
    "encode": work.encode_batch,
    "decode": work.decode_batch,
    "sample": work.sample_batch,
    "elbo": work.elbo_batch,
    "score": work.score_batch,
    "feature_errors": work.feature_errors_batch,
}
SCORE_NAMES = {
    vae_pb2.SCORE_TYPE_UNSPECIFIED: "reconstruction_error",  # the best measured: docs/anomaly.md
    vae_pb2.SCORE_TYPE_NEGATIVE_ELBO: "negative_elbo",
    vae_pb2.SCORE_TYPE_NEGATIVE_IWAE: "negative_iwae",
    vae_pb2.SCORE_TYPE_RECONSTRUCTION_ERROR: "reconstruction_error",
    vae_pb2.SCORE_TYPE_NEGATIVE_RECONSTRUCTION_PROBABILITY: "negative_reconstruction_probability",
    vae_pb2.SCORE_TYPE_COMPLEXITY_CORRECTED: "complexity_corrected",
}
SCORE_TYPES = {name: score_type for score_type, name in SCORE_NAMES.items() if score_type}
DEFAULT_FALSE_POSITIVE_RATE = 0.01
INFO_QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.999)


def check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidInput(f"{field}: {value} is out of range; allowed {low}..{high}")
    return value


def fresh_seed() -> int:
    """A random seed for a request that gave none (53 bits: exact in a JSON number)."""
    return secrets.randbits(53)


def request_seed(request) -> int:
    """The request's seed, or a fresh random one (returned in the reply so the call can be replayed)."""
    return request.seed if request.HasField("seed") else fresh_seed()


def check_value_range(x: np.ndarray, bundle: Bundle) -> np.ndarray:
    """A Bernoulli model's likelihood is defined for x in [0, 1] only; outside it, refuse."""
    if bundle.manifest.likelihood.name == "bernoulli" and (x.min() < 0.0 or x.max() > 1.0):
        row, feature = np.argwhere((x < 0.0) | (x > 1.0))[0]
        raise InvalidInput(
            f"x: value {x[row, feature]:g} in row {row}, feature {feature} is outside [0, 1], the range of "
            "this Bernoulli model's data"
        )
    return x


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
        self._batchers: dict[tuple[str, str, str], DynamicBatcher] = {}

    def abandon_waiting(self, reason: str) -> int:
        """Answer every call waiting on a batch with UNAVAILABLE ``reason``; returns how many."""
        return sum(batcher.abandon(NotReady(reason)) for batcher in self._batchers.values())

    def resolve(self, model: vae_pb2.ModelRef) -> Bundle:
        if self.registry is None:
            raise NotReady("the server is still loading and verifying its models; retry shortly")
        return self.registry.resolve(model.name, model.version)

    def _batcher(self, bundle: Bundle, kind: str) -> DynamicBatcher:
        """The batcher of one kind of work ("elbo", "encode", ...) for one model version."""
        key = (bundle.manifest.name, bundle.manifest.version, kind)
        if key not in self._batchers:
            run = functools.partial(BATCH_FUNCTIONS[kind], bundle.vae)

            async def run_batch(items: list) -> list:
                # On the inference threads: ONNX Runtime releases the GIL, the event loop stays free.
                return await asyncio.get_running_loop().run_in_executor(self.executor, run, items)

            settings = self.settings
            self._batchers[key] = DynamicBatcher(
                run_batch,
                max_batch_cost=settings.max_batch_rows,
                max_batch_wait_s=settings.max_batch_wait_s,
                max_queue_cost=settings.max_queue_rows,
                concurrency=settings.batch_runners,
                adaptive_wait=settings.batch_wait == "adaptive",
                observer=self.metrics.batch_observer(kind, f"{key[0]}:{key[1]}"),
            )
        return self._batchers[key]

    async def compute(self, method: str, bundle: Bundle, kind: str, item, rows: int, cost: int, context):
        """Queue one request's work with its batcher and wait for its result."""
        result = await self._batcher(bundle, kind).submit(item, cost, context.time_remaining())
        self.metrics.examples.labels(method).inc(rows)
        return result

    def _inputs(self, request, bundle: Bundle) -> np.ndarray:
        x = codec.rows_from_tensor(request.x, "x", input_shapes(bundle), self.settings.max_rows)
        return check_value_range(x, bundle)

    def samples_per_row(self, field: str, value: int, rows: int, low: int) -> int:
        check_range(field, value, low, self.settings.max_k)
        if rows * value > self.settings.max_row_samples:
            raise InvalidInput(
                f"{field}: {rows} rows x {value} samples = {rows * value} exceeds the limit of "
                f"{self.settings.max_row_samples} per request; send fewer rows or samples"
            )
        return value

    async def Encode(self, request, context):
        bundle = self.resolve(request.model)
        x = self._inputs(request, bundle)
        num_samples = self.samples_per_row("num_samples", request.num_samples, len(x), 0)
        seed = request_seed(request)
        item = work.EncodeItem(x, num_samples, seed)
        z_mean, z_logvar, samples = await self.compute("Encode", bundle, "encode", item, len(x), len(x), context)
        reply = vae_pb2.EncodeResponse(
            model=model_version(bundle), z_mean=codec.to_tensor(z_mean), z_logvar=codec.to_tensor(z_logvar), seed=seed
        )
        if samples is not None:
            reply.z_samples.CopyFrom(codec.to_tensor(samples))
        return reply

    async def Decode(self, request, context):
        bundle = self.resolve(request.model)
        z = codec.rows_from_tensor(request.z, "z", [(bundle.manifest.latent_dim,)], self.settings.max_rows)
        num_samples = self.samples_per_row("num_samples", request.num_samples, len(z), 0)
        seed = request_seed(request)
        item = work.DecodeItem(z, num_samples, seed)
        params, samples = await self.compute("Decode", bundle, "decode", item, len(z), len(z), context)
        reply = vae_pb2.DecodeResponse(model=model_version(bundle), seed=seed)
        if "probs" in params:
            reply.bernoulli.probs.CopyFrom(codec.to_tensor(params["probs"]))
        else:
            reply.gaussian.mean.CopyFrom(codec.to_tensor(params["mean"]))
            reply.gaussian.scale.CopyFrom(codec.to_tensor(params["scale"]))
        if samples is not None:
            reply.x_samples.CopyFrom(codec.to_tensor(samples))
        return reply

    def _sampler(self, request, bundle: Bundle) -> tuple[work.Sampler, int]:
        temperature = request.temperature if request.HasField("temperature") else 1.0
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInput(f"temperature: {temperature} must be a finite number > 0")
        seed = request_seed(request)
        return work.Sampler(bundle.manifest.latent_dim, temperature, seed), seed

    @staticmethod
    def _sample_reply(bundle: Bundle, samples: work.Samples, seed: int, offset: int) -> vae_pb2.SampleResponse:
        return vae_pb2.SampleResponse(
            model=model_version(bundle),
            z=codec.to_tensor(samples.z),
            x_mean=codec.to_tensor(samples.x_mean),
            x=codec.to_tensor(samples.x),
            seed=seed,
            offset=offset,
        )

    async def Sample(self, request, context):
        bundle = self.resolve(request.model)
        count = check_range("n", request.n, 1, self.settings.max_sample_n)
        sampler, seed = self._sampler(request, bundle)
        samples = await self.compute("Sample", bundle, "sample", work.SampleItem(sampler, count), count, count, context)
        return self._sample_reply(bundle, samples, seed, 0)

    async def SampleStream(self, request, context):
        bundle = self.resolve(request.model)
        count = check_range("n", request.n, 1, self.settings.max_stream_sample_n)
        default_chunk = min(self.settings.default_chunk_size, self.settings.max_sample_n)
        chunk = check_range("chunk_size", request.chunk_size or default_chunk, 1, self.settings.max_sample_n)
        sampler, seed = self._sampler(request, bundle)
        for offset in range(0, count, chunk):
            rows = min(chunk, count - offset)
            item = work.SampleItem(sampler, rows)
            samples = await self.compute("SampleStream", bundle, "sample", item, rows, rows, context)
            yield self._sample_reply(bundle, samples, seed, offset)

    async def Elbo(self, request, context):
        bundle = self.resolve(request.model)
        x = self._inputs(request, bundle)
        k = self.samples_per_row("k", request.k or 1, len(x), 1)
        seed = request_seed(request)
        bounds = await self.compute("Elbo", bundle, "elbo", work.BoundsItem(x, k, seed), len(x), len(x) * k, context)
        nats_to_bits_per_dim = -1.0 / (x.shape[1] * math.log(2.0))
        reply = vae_pb2.ElboResponse(
            model=model_version(bundle),
            # tolist(): protobuf copies a list of Python floats in C, numpy scalars one by one (2x slower).
            elbo=bounds.elbo.tolist(),
            reconstruction=bounds.reconstruction.tolist(),
            kl=bounds.kl.tolist(),
            elbo_bits_per_dim=(bounds.elbo * nats_to_bits_per_dim).tolist(),
            k=k,
            seed=seed,
        )
        if k > 1:
            reply.iwae.extend(bounds.iwae.tolist())
            reply.iwae_standard_error.extend(bounds.iwae_standard_error.tolist())
            reply.iwae_bits_per_dim.extend((bounds.iwae * nats_to_bits_per_dim).tolist())
        return reply

    async def ScoreAnomaly(self, request, context):
        bundle = self.resolve(request.model)
        if request.score not in SCORE_NAMES:
            raise InvalidInput(f"score: unknown score type {request.score}; known: {sorted(SCORE_TYPES)}")
        name = SCORE_NAMES[request.score]
        if name not in bundle.manifest.calibration.scores:
            raise NotCalibrated(
                f"score {name}: model {bundle.manifest.name}:{bundle.manifest.version} has no calibration for it; "
                "recalibrate it with `vae-train calibrate` or choose another score"
            )
        x = self._inputs(request, bundle)
        samples_per_row = self.samples_per_row("score samples", SCORE_PARAMS[name].get("num_samples", 1), len(x), 1)
        rate, threshold = self._threshold(request)
        seed = request_seed(request)
        errors = None
        if request.return_feature_errors:
            item = work.FeatureErrorsItem(x)
            rows = len(x) if name == "reconstruction_error" else 0  # counted once per request
            errors = await self.compute("ScoreAnomaly", bundle, "feature_errors", item, rows, len(x), context)
        if errors is not None and name == "reconstruction_error":
            scores = errors.sum(axis=1, dtype=np.float64)  # the score is their row sum: not computed twice
        else:
            item = work.ScoreItem(x, name, seed)
            cost = len(x) * samples_per_row
            scores = await self.compute("ScoreAnomaly", bundle, "score", item, len(x), cost, context)
        decision = decide(scores, bundle.manifest.calibration.scores[name], rate, threshold)
        model = f"{bundle.manifest.name}:{bundle.manifest.version}"
        self.metrics.scored.labels(model).inc(len(scores))
        self.metrics.anomalies.labels(model).inc(int(decision.is_anomaly.sum()))
        feature_errors = None if errors is None else codec.to_tensor(errors)
        return vae_pb2.ScoreAnomalyResponse(
            model=model_version(bundle),
            score=SCORE_TYPES[name],
            scores=scores.tolist(),
            percentile=decision.percentile.tolist(),
            p_value=decision.p_value.tolist(),
            is_anomaly=decision.is_anomaly.tolist(),
            threshold=decision.threshold,
            false_positive_rate=decision.false_positive_rate,
            seed=seed,
            feature_errors=feature_errors,
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
        bundle = self.resolve(request.model)
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
