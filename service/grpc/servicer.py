"""vae.v1.VaeService: thin handlers over the data plane. Each decodes and checks its request
(``codec``, the plane's limits), hands one ``core.work`` item to ``DataPlane.run`` and encodes the
reply. Errors are raised, never answered here: the interceptor maps them to statuses.
"""

import math

import numpy as np

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core import work
from vae_serve.core.errors import InvalidInput, NotCalibrated
from vae_serve.core.preprocessing import IDENTITY
from vae_serve.core.scores import DEFAULT_SCORE, score_named
from vae_serve.service import codec
from vae_serve.service.dataplane import DataPlane, ServedModel
from vae_serve.service.metrics import ServerMetrics
from vae_serve.service.score_types import SCORE_TYPES, calibration_summary, score_facts, score_name

DEFAULT_FALSE_POSITIVE_RATE = 0.01
SPHERICAL_PATHS = {vae_pb2.INTERPOLATION_PATH_LINEAR: False, vae_pb2.INTERPOLATION_PATH_SPHERICAL: True}
INFO_QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.999)
# Sample's temperature multiplies the prior's standard deviation. At 10 a draw lies ~10 prior
# standard deviations out in every coordinate, far beyond any code the encoder was trained to give
# (those lie within a few), so more buys nothing but arithmetic trouble: float32 latents overflow
# near 4e37 (1e300 made non-finite samples, answered INTERNAL, with numpy warnings in the log).
MAX_TEMPERATURE = 10.0


def threshold_of(request) -> tuple[float | None, float | None]:
    """(false-positive rate, explicit threshold) of a ScoreAnomaly request: exactly one is set."""
    which = request.WhichOneof("threshold")
    if which == "score_threshold":
        if not math.isfinite(request.score_threshold):
            raise InvalidInput(f"score_threshold: {request.score_threshold} is not a finite number")
        return None, request.score_threshold
    rate = request.false_positive_rate if which == "false_positive_rate" else DEFAULT_FALSE_POSITIVE_RATE
    if not 0.0 < rate < 1.0:
        raise InvalidInput(f"false_positive_rate: {rate} must be strictly between 0 and 1")
    return rate, None


def temperature_of(request) -> float:
    """A SampleRequest's temperature (1 when unset), checked against ``MAX_TEMPERATURE``.

    Raises:
        InvalidInput: not a finite number in (0, MAX_TEMPERATURE].
    """
    temperature = request.temperature if request.HasField("temperature") else 1.0
    if not (math.isfinite(temperature) and 0.0 < temperature <= MAX_TEMPERATURE):
        raise InvalidInput(
            f"temperature: {temperature} must be a finite number in (0, {MAX_TEMPERATURE:g}]; it multiplies "
            "the prior's standard deviation (1 samples the prior itself)"
        )
    return temperature


def preprocessing_info(spec) -> vae_pb2.Preprocessing:
    """The bundle's input map; a format-1 bundle has none, which is the identity."""
    spec = spec or IDENTITY
    return vae_pb2.Preprocessing(loc=spec.loc, scale=spec.scale, description=spec.description)


def split_metrics(metrics) -> vae_pb2.SplitMetrics:
    return vae_pb2.SplitMetrics(**metrics.model_dump(include=set(vae_pb2.SplitMetrics.DESCRIPTOR.fields_by_name)))


class VaeServicer(vae_pb2_grpc.VaeServiceServicer):
    def __init__(self, plane: DataPlane, metrics: ServerMetrics) -> None:
        self.plane = plane
        self.limits = plane.limits
        self.metrics = metrics

    def _model(self, request) -> ServedModel:
        return self.plane.resolve(request.model.name, request.model.version)

    def _inputs(self, request, model: ServedModel) -> np.ndarray:
        return codec.rows_from_tensor(request.x, "x", model.inputs, self.limits.max_rows)

    async def Encode(self, request, context):
        model = self._model(request)
        x = self._inputs(request, model)
        num_samples = self.limits.samples_per_row("num_samples", request.num_samples, len(x), 0)
        seed = codec.request_seed(request)
        item = work.EncodeItem(x, num_samples, seed)
        z_mean, z_logvar, draws = await self.plane.run(model, item, "Encode", context.time_remaining())
        return vae_pb2.EncodeResponse(
            model=codec.model_version(model.bundle.manifest),
            z_mean=codec.to_tensor(z_mean),
            z_logvar=codec.to_tensor(z_logvar),
            z_samples=None if draws is None else codec.to_tensor(draws),
            seed=seed,
        )

    async def Decode(self, request, context):
        model = self._model(request)
        z = codec.rows_from_tensor(request.z, "z", model.latents, self.limits.max_rows)
        num_samples = self.limits.samples_per_row("num_samples", request.num_samples, len(z), 0)
        seed = codec.request_seed(request)
        item = work.DecodeItem(z, num_samples, seed)
        params, draws = await self.plane.run(model, item, "Decode", context.time_remaining())
        reply = vae_pb2.DecodeResponse(
            model=codec.model_version(model.bundle.manifest),
            x_samples=None if draws is None else codec.to_tensor(draws),
            seed=seed,
        )
        if "probs" in params:
            reply.bernoulli.probs.CopyFrom(codec.to_tensor(params["probs"]))
        else:
            reply.gaussian.mean.CopyFrom(codec.to_tensor(params["mean"]))
            reply.gaussian.scale.CopyFrom(codec.to_tensor(params["scale"]))
        return reply

    @staticmethod
    def _sample_reply(model: ServedModel, samples: work.Samples, seed: int, offset: int) -> vae_pb2.SampleResponse:
        return vae_pb2.SampleResponse(
            model=codec.model_version(model.bundle.manifest),
            z=codec.to_tensor(samples.z),
            x_mean=codec.to_tensor(samples.x_mean),
            x=codec.to_tensor(samples.x),
            seed=seed,
            offset=offset,
        )

    async def Sample(self, request, context):
        model = self._model(request)
        count = self.limits.sample_count(request.n)
        seed = codec.request_seed(request)
        sampler = work.Sampler(model.bundle.manifest.latent_dim, temperature_of(request), seed)
        samples = await self.plane.run(model, work.SampleItem(sampler, count), "Sample", context.time_remaining())
        return self._sample_reply(model, samples, seed, 0)

    async def SampleStream(self, request, context):
        model = self._model(request)
        count = self.limits.stream_count(request.n)
        chunk = self.limits.chunk_size(request.chunk_size)
        seed = codec.request_seed(request)
        sampler = work.Sampler(model.bundle.manifest.latent_dim, temperature_of(request), seed)
        for offset in range(0, count, chunk):
            item = work.SampleItem(sampler, min(chunk, count - offset))
            samples = await self.plane.run(model, item, "SampleStream", context.time_remaining())
            yield self._sample_reply(model, samples, seed, offset)

    async def Elbo(self, request, context):
        model = self._model(request)
        x = self._inputs(request, model)
        k = self.limits.samples_per_row("k", request.k or 1, len(x), 1)
        seed = codec.request_seed(request)
        bounds = await self.plane.run(model, work.BoundsItem(x, k, seed), "Elbo", context.time_remaining())
        nats_to_bits_per_dim = -1.0 / (x.shape[1] * math.log(2.0))
        reply = vae_pb2.ElboResponse(
            model=codec.model_version(model.bundle.manifest),
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
        model = self._model(request)
        name = score_name(request.score)
        manifest = model.bundle.manifest
        if name not in manifest.calibration.scores:
            raise NotCalibrated(
                f"score {name}: model {manifest.name}:{manifest.version} has no calibration for it; "
                "recalibrate it with `vae-train calibrate` or choose another score"
            )
        x = self._inputs(request, model)
        self.limits.samples_per_row("score samples", score_named(name).num_samples or 1, len(x), 1)
        rate, threshold = threshold_of(request)
        calibration = manifest.calibration.scores[name]
        item = work.ScoreItem(
            x, name, codec.request_seed(request), calibration, rate, threshold, request.return_feature_errors
        )
        outcome = await self.plane.run(model, item, "ScoreAnomaly", context.time_remaining())
        decision = outcome.decision
        self.metrics.scored.labels(model.label).inc(len(outcome.scores))
        self.metrics.anomalies.labels(model.label).inc(int(decision.is_anomaly.sum()))
        return vae_pb2.ScoreAnomalyResponse(
            model=codec.model_version(manifest),
            score=SCORE_TYPES[name],
            scores=outcome.scores.tolist(),
            percentile=decision.percentile.tolist(),
            p_value=decision.p_value.tolist(),
            is_anomaly=decision.is_anomaly.tolist(),
            threshold=decision.threshold,
            false_positive_rate=decision.false_positive_rate,
            seed=item.seed,
            feature_errors=None
            if outcome.feature_errors is None
            else codec.to_saturated_tensor(outcome.feature_errors),
        )

    async def Interpolate(self, request, context):
        model = self._model(request)
        ends = [self._path_end(request, which, model) for which in ("start", "end")]
        if len(ends[0][1]) != len(ends[1][1]):
            raise InvalidInput(f"start and end: {len(ends[0][1])} rows at the start, {len(ends[1][1])} at the end")
        paths = len(ends[0][1])
        steps = self.limits.samples_per_row("steps", request.steps, paths, 2)
        num_samples = self.limits.samples_per_row("num_samples", request.num_samples, paths * steps, 0)
        if request.path not in SPHERICAL_PATHS:
            raise InvalidInput(f"path: unknown interpolation path {request.path}; known: {sorted(SPHERICAL_PATHS)}")
        seed = codec.request_seed(request)
        inputs = [rows for kind, rows in ends if kind == "x"]
        if inputs:  # both input ends in one encoder batch; a path starts or ends at E[z|x]
            item = work.EncodeItem(np.concatenate(inputs))
            z_mean, _, _ = await self.plane.run(model, item, "Interpolate", context.time_remaining(), count=False)
            means = iter(np.split(z_mean, len(inputs)))
            ends = [("z", next(means)) if kind == "x" else (kind, rows) for kind, rows in ends]
        (_, start), (_, end) = ends
        # Every end lies within +-LATENT_LIMIT (the request's codes are checked, the encoder's means
        # boxed), so a spherical path's points, as long as its longer end, stay finite in float32.
        item = work.PathItem(start, end, steps, SPHERICAL_PATHS[request.path], num_samples, seed)
        params, draws = await self.plane.run(model, item, "Interpolate", context.time_remaining())
        t, z = item.path
        x_mean = params["probs"] if "probs" in params else params["mean"]
        return vae_pb2.InterpolateResponse(
            model=codec.model_version(model.bundle.manifest),
            t=t.tolist(),
            z=codec.to_tensor(z),
            x_mean=codec.to_tensor(x_mean.reshape(paths, steps, -1)),
            x_samples=None if draws is None else codec.to_tensor(draws.reshape(num_samples, paths, steps, -1)),
            seed=seed,
        )

    def _path_end(self, request, which: str, model: ServedModel) -> tuple[str, np.ndarray]:
        """("x", inputs [n, D]) or ("z", latent codes [n, L]) of one end of the paths."""
        field = request.WhichOneof(which)
        if field is None:
            raise InvalidInput(f"{which}: missing; set x_{which} (inputs) or z_{which} (latent codes)")
        if field.startswith("x"):
            return "x", codec.rows_from_tensor(getattr(request, field), field, model.inputs, self.limits.max_rows)
        return "z", codec.rows_from_tensor(getattr(request, field), field, model.latents, self.limits.max_rows)

    async def GetModelInfo(self, request, context):
        model = self._model(request)
        manifest = model.bundle.manifest
        limits = self.limits
        levels = manifest.calibration.quantile_levels
        return vae_pb2.ModelInfo(
            model=codec.model_version(manifest),
            input_shape=manifest.input.shape,
            num_features=manifest.input.num_features,
            latent_dim=manifest.latent_dim,
            likelihood=manifest.likelihood.name,
            created_at=manifest.created_at,
            validation=split_metrics(manifest.metrics.validation),
            test=split_metrics(manifest.metrics.test),
            binarization=manifest.metrics.binarization,
            calibration=[
                calibration_summary(name, entry, levels, INFO_QUANTILE_LEVELS)
                for name, entry in manifest.calibration.scores.items()
                if name in SCORE_TYPES
            ],
            available_versions=self.plane.versions(manifest.name),
            providers=self.plane.registry.providers,
            max_rows=limits.max_rows,
            max_k=limits.max_k,
            max_row_samples=limits.max_row_samples,
            max_sample_n=limits.max_sample_n,
            max_stream_sample_n=limits.max_stream_sample_n,
            preprocessing=preprocessing_info(manifest.preprocessing),
            max_request_bytes=self.plane.settings.max_receive_message_bytes,
            max_reply_bytes=self.plane.settings.max_send_message_bytes,
            scores=score_facts(),
            default_score=SCORE_TYPES[DEFAULT_SCORE],
        )
