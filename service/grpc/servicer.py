"""vae.v1.VaeService: thin handlers over the plane's operations. Each decodes its request
(``codec``), calls one operation (``plane.operations``) and encodes the reply. Errors are raised,
never answered here: the interceptor maps them to statuses.
"""

import math

from vae_serve.api.v1 import vae_pb2, vae_pb2_grpc
from vae_serve.core.errors import InvalidInput
from vae_serve.core.preprocessing import IDENTITY
from vae_serve.core.scores import default_score_of
from vae_serve.service.grpc import codec, monitoring
from vae_serve.service.grpc.score_types import SCORE_TYPES, calibration_summary, score_facts, score_name
from vae_serve.service.plane.dataplane import ServedModel
from vae_serve.service.plane.operations import Operations
from vae_serve.service.settings import Settings

SPHERICAL_PATHS = {vae_pb2.INTERPOLATION_PATH_LINEAR: False, vae_pb2.INTERPOLATION_PATH_SPHERICAL: True}
INFO_QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.999)


def threshold_fields(request) -> tuple[float | None, float | None]:
    """(false_positive_rate, score_threshold) of a ScoreAnomaly request's oneof: the one set, or neither."""
    which = request.WhichOneof("threshold")
    if which == "score_threshold":
        return None, request.score_threshold
    return (request.false_positive_rate if which == "false_positive_rate" else None), None


def preprocessing_info(spec) -> vae_pb2.Preprocessing:
    """The bundle's input map; a format-1 bundle has none, which is the identity."""
    spec = spec or IDENTITY
    return vae_pb2.Preprocessing(loc=spec.loc, scale=spec.scale, description=spec.description)


def split_metrics(metrics) -> vae_pb2.SplitMetrics | None:
    """A split's bounds, or None (the field left unset) for a split the run did not keep."""
    if metrics is None:
        return None
    return vae_pb2.SplitMetrics(**metrics.model_dump(include=set(vae_pb2.SplitMetrics.DESCRIPTOR.fields_by_name)))


def latent_map_info(plane) -> vae_pb2.LatentMap | None:
    """The manifest's principal plane of the posterior means, or None (unset) for a bundle without one."""
    if plane is None:
        return None
    return vae_pb2.LatentMap(
        rows=plane.rows,
        num_rows=plane.num_rows,
        mean=plane.mean,
        directions=[
            vae_pb2.LatentDirection(unit=direction.unit, sd=direction.sd, variance_fraction=direction.variance_fraction)
            for direction in plane.directions
        ],
    )


class VaeServicer(vae_pb2_grpc.VaeServiceServicer):
    def __init__(self, operations: Operations, settings: Settings) -> None:
        self.operations = operations
        self.limits = operations.limits
        self.settings = settings

    def _model(self, request) -> ServedModel:
        return self.operations.model(request.model.name, request.model.version)

    def _rows(self, tensor, field: str, row_format):
        return codec.array_from_tensor(tensor, field, row_format, self.limits.max_rows)

    async def Encode(self, request, context):
        model = self._model(request)
        x = self._rows(request.x, "x", model.inputs)
        seed = codec.request_seed(request)
        encoded = await self.operations.encode(model, x, request.num_samples, seed, "Encode", context.time_remaining())
        return vae_pb2.EncodeResponse(
            model=codec.model_version(model.bundle.manifest),
            z_mean=codec.to_tensor(encoded.z_mean),
            z_logvar=codec.to_tensor(encoded.z_logvar),
            z_samples=None if encoded.draws is None else codec.to_tensor(encoded.draws),
            seed=encoded.seed,
        )

    async def Decode(self, request, context):
        model = self._model(request)
        z = self._rows(request.z, "z", model.latents)
        seed = codec.request_seed(request)
        decoded = await self.operations.decode(model, z, request.num_samples, seed, "Decode", context.time_remaining())
        reply = vae_pb2.DecodeResponse(
            model=codec.model_version(model.bundle.manifest),
            x_samples=None if decoded.draws is None else codec.to_tensor(decoded.draws),
            seed=decoded.seed,
        )
        params = decoded.params
        if "probs" in params:
            reply.bernoulli.probs.CopyFrom(codec.to_tensor(params["probs"]))
        else:
            reply.gaussian.mean.CopyFrom(codec.to_tensor(params["mean"]))
            reply.gaussian.scale.CopyFrom(codec.to_tensor(params["scale"]))
        return reply

    @staticmethod
    def _sample_reply(model: ServedModel, samples, seed: int, offset: int) -> vae_pb2.SampleResponse:
        return vae_pb2.SampleResponse(
            model=codec.model_version(model.bundle.manifest),
            z=codec.to_tensor(samples.z),
            x_mean=codec.to_tensor(samples.x_mean),
            x=codec.to_tensor(samples.x),
            seed=seed,
            offset=offset,
        )

    @staticmethod
    def _temperature(request) -> float | None:
        return request.temperature if request.HasField("temperature") else None

    async def Sample(self, request, context):
        model = self._model(request)
        samples, seed = await self.operations.sample(
            model, request.n, self._temperature(request), codec.request_seed(request), context.time_remaining()
        )
        return self._sample_reply(model, samples, seed, 0)

    async def SampleStream(self, request, context):
        model = self._model(request)
        chunks = self.operations.sample_stream(
            model,
            request.n,
            request.chunk_size,
            self._temperature(request),
            codec.request_seed(request),
            context.time_remaining,
        )
        async for samples, seed, offset in chunks:
            yield self._sample_reply(model, samples, seed, offset)

    async def Elbo(self, request, context):
        model = self._model(request)
        x = self._rows(request.x, "x", model.inputs)
        seed = codec.request_seed(request)
        bounds = await self.operations.bounds(model, x, request.k or 1, seed, "Elbo", context.time_remaining())
        estimates, k = bounds.estimates, bounds.k
        nats_to_bits_per_dim = -1.0 / (x.shape[1] * math.log(2.0))
        reply = vae_pb2.ElboResponse(
            model=codec.model_version(model.bundle.manifest),
            # tolist(): protobuf copies a list of Python floats in C, numpy scalars one by one (2x slower).
            elbo=estimates.elbo.tolist(),
            reconstruction=estimates.reconstruction.tolist(),
            kl=estimates.kl.tolist(),
            elbo_bits_per_dim=(estimates.elbo * nats_to_bits_per_dim).tolist(),
            k=k,
            seed=bounds.seed,
        )
        if k > 1:
            reply.iwae.extend(estimates.iwae.tolist())
            reply.iwae_standard_error.extend(estimates.iwae_standard_error.tolist())
            reply.iwae_bits_per_dim.extend((estimates.iwae * nats_to_bits_per_dim).tolist())
        return reply

    async def ScoreAnomaly(self, request, context):
        model = self._model(request)
        name = score_name(request.score, default_score_of(model.bundle.manifest))
        x = self._rows(request.x, "x", model.inputs)
        rate, threshold = threshold_fields(request)
        scored = await self.operations.score(
            model,
            x,
            name,
            codec.request_seed(request),
            rate,
            threshold,
            request.return_feature_errors,
            context.time_remaining(),
            request_id=codec.request_id(context),
        )
        outcome = scored.outcome
        decision = outcome.decision
        return vae_pb2.ScoreAnomalyResponse(
            model=codec.model_version(model.bundle.manifest),
            score=SCORE_TYPES[name],
            scores=outcome.scores.tolist(),
            percentile=decision.percentile.tolist(),
            p_value=decision.p_value.tolist(),
            is_anomaly=decision.is_anomaly.tolist(),
            threshold=decision.threshold,
            false_positive_rate=decision.false_positive_rate,
            seed=scored.seed,
            feature_errors=None
            if outcome.feature_errors is None
            else codec.to_saturated_tensor(outcome.feature_errors),
        )

    async def Interpolate(self, request, context):
        model = self._model(request)
        ends = [self._path_end(request, which, model) for which in ("start", "end")]
        if request.path not in SPHERICAL_PATHS:
            raise InvalidInput(f"path: unknown interpolation path {request.path}; known: {sorted(SPHERICAL_PATHS)}")
        path = await self.operations.interpolate(
            model,
            ends,
            request.steps,
            SPHERICAL_PATHS[request.path],
            request.num_samples,
            codec.request_seed(request),
            context.time_remaining(),
        )
        return vae_pb2.InterpolateResponse(
            model=codec.model_version(model.bundle.manifest),
            t=path.t.tolist(),
            z=codec.to_tensor(path.z),
            x_mean=codec.to_tensor(path.x_mean),
            x_samples=None if path.draws is None else codec.to_tensor(path.draws),
            seed=path.seed,
        )

    def _path_end(self, request, which: str, model: ServedModel):
        """(field, "x" or "z", rows) of one end of the paths: inputs or latent codes."""
        field = request.WhichOneof(which)
        if field is None:
            raise InvalidInput(f"{which}: missing; set x_{which} (inputs) or z_{which} (latent codes)")
        kind, row_format = ("x", model.inputs) if field.startswith("x") else ("z", model.latents)
        return field, kind, self._rows(getattr(request, field), field, row_format)

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
            available_versions=self.operations.plane.versions(manifest.name),
            providers=self.operations.plane.providers,
            max_rows=limits.max_rows,
            max_k=limits.max_k,
            max_row_samples=limits.max_row_samples,
            max_sample_n=limits.max_sample_n,
            max_stream_sample_n=limits.max_stream_sample_n,
            preprocessing=preprocessing_info(manifest.preprocessing),
            max_request_bytes=self.settings.max_receive_message_bytes,
            max_reply_bytes=self.settings.max_send_message_bytes,
            scores=score_facts(),
            default_score=SCORE_TYPES[default_score_of(manifest)],
            latent_map=latent_map_info(manifest.latent_map),
        )

    async def GetMonitoring(self, request, context):
        plane = self.operations.plane
        model, version = monitoring.selection(plane, request.model)
        monitor = plane.monitor  # None with --no-monitor
        watched = None if monitor is None else monitoring.readings(monitor, model, version)
        return monitoring.monitoring_reply(self.settings, watched)
