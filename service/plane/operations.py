"""The operations every binding calls: encode, decode, sample, bounds, score and interpolate.

Each takes numpy arrays and plain arguments, checks them (rows, limits, temperature, threshold),
hands ``core.work`` items to ``DataPlane.run`` (the batchers) and returns numpy results. A binding
(VaeService, the Open Inference Protocol over gRPC or REST) only decodes its request, picks the
model (``model``), calls one operation and encodes the reply, so every check and every sequence of
steps (Interpolate's encode, then decode) is written once, here.

``method``: the name the call is counted under in the examples metric (its rpc, e.g. "Encode" or
"ModelInfer"); ``timeout_s``: the caller's remaining deadline (None: none).
"""

import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from vae_serve.core import work
from vae_serve.core.bounds import BoundEstimates
from vae_serve.core.errors import InvalidInput, NotCalibrated
from vae_serve.core.scores import available_scores, score_named
from vae_serve.service.monitor.events import ScoredEvent
from vae_serve.service.observe.tracing import current_trace_id
from vae_serve.service.plane.dataplane import DataPlane, ServedModel
from vae_serve.service.plane.rows import checked_rows, fresh_seed

DEFAULT_FALSE_POSITIVE_RATE = 0.01
# Sample's temperature multiplies the prior's standard deviation. At 10 a draw lies ~10 prior
# standard deviations out in every coordinate, far beyond any code the encoder was trained to give
# (those lie within a few), so more buys nothing but arithmetic trouble: float32 latents overflow
# near 4e37 (1e300 made non-finite samples, answered INTERNAL, with numpy warnings in the log).
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class Encoded:
    z_mean: np.ndarray  # [n, L]
    z_logvar: np.ndarray  # [n, L]
    draws: np.ndarray | None  # [num_samples, n, L], or None without samples
    seed: int


@dataclass(frozen=True)
class Decoded:
    params: dict[str, np.ndarray]  # the likelihood's parameters: "probs", or "mean" and "scale"
    draws: np.ndarray | None  # [num_samples, n, D], or None without samples
    seed: int


@dataclass(frozen=True)
class Bounds:
    estimates: BoundEstimates
    k: int
    seed: int


@dataclass(frozen=True)
class Scored:
    outcome: work.ScoreOutcome
    seed: int


@dataclass(frozen=True)
class Path:
    t: np.ndarray  # [steps]
    z: np.ndarray  # [paths, steps, L]
    x_mean: np.ndarray  # [paths, steps, D]
    draws: np.ndarray | None  # [num_samples, paths, steps, D]
    seed: int


def temperature_checked(temperature: float | None) -> float:
    """A Sample's temperature (1 when unset), checked against ``MAX_TEMPERATURE``.

    Raises:
        InvalidInput: not a finite number in (0, MAX_TEMPERATURE].
    """
    temperature = 1.0 if temperature is None else temperature
    if not (math.isfinite(temperature) and 0.0 < temperature <= MAX_TEMPERATURE):
        raise InvalidInput(
            f"temperature: {temperature} must be a finite number in (0, {MAX_TEMPERATURE:g}]; it multiplies "
            "the prior's standard deviation (1 samples the prior itself)"
        )
    return temperature


def threshold_of(false_positive_rate: float | None, score_threshold: float | None) -> tuple[float | None, float | None]:
    """(false-positive rate, explicit threshold) of a score request: at most one is given, and the
    default is a rate of ``DEFAULT_FALSE_POSITIVE_RATE``.

    Raises:
        InvalidInput: a threshold that is not finite, or a rate not strictly between 0 and 1.
    """
    if score_threshold is not None:
        if not math.isfinite(score_threshold):
            raise InvalidInput(f"score_threshold: {score_threshold} is not a finite number")
        return None, score_threshold
    rate = DEFAULT_FALSE_POSITIVE_RATE if false_positive_rate is None else false_positive_rate
    if not 0.0 < rate < 1.0:
        raise InvalidInput(f"false_positive_rate: {rate} must be strictly between 0 and 1")
    return rate, None


class Operations:
    """The plane's operations for every binding; ``plane`` runs the work."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.limits = plane.limits

    def model(self, name: str, version: str) -> ServedModel:
        """The model version a request names; empty fields: the default model, its latest version."""
        return self.plane.resolve(name, version)

    def inputs(self, field: str, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """Input rows [n, D] (or the natural shape) as float32 [n, D], checked."""
        return checked_rows(field, x, model.inputs, self.limits.max_rows)

    def latents(self, field: str, model: ServedModel, z: np.ndarray) -> np.ndarray:
        """Latent codes [n, L] as float32, checked."""
        return checked_rows(field, z, model.latents, self.limits.max_rows)

    async def encode(
        self, model: ServedModel, x: np.ndarray, num_samples: int, seed: int | None, method: str, timeout_s
    ) -> Encoded:
        """The posterior of each row, and ``num_samples`` draws from it."""
        x = self.inputs("x", model, x)
        num_samples = self.limits.samples_per_row("num_samples", num_samples, len(x), 0)
        seed = fresh_seed() if seed is None else seed
        z_mean, z_logvar, draws = await self.plane.run(model, work.EncodeItem(x, num_samples, seed), method, timeout_s)
        return Encoded(z_mean, z_logvar, draws, seed)

    async def decode(
        self, model: ServedModel, z: np.ndarray, num_samples: int, seed: int | None, method: str, timeout_s
    ) -> Decoded:
        """The likelihood's parameters for each code, and ``num_samples`` draws of x."""
        z = self.latents("z", model, z)
        num_samples = self.limits.samples_per_row("num_samples", num_samples, len(z), 0)
        seed = fresh_seed() if seed is None else seed
        params, draws = await self.plane.run(model, work.DecodeItem(z, num_samples, seed), method, timeout_s)
        return Decoded(params, draws, seed)

    @staticmethod
    def _sampler(model: ServedModel, temperature: float | None, seed: int | None) -> tuple[work.Sampler, int]:
        seed = fresh_seed() if seed is None else seed
        return work.Sampler(model.bundle.manifest.latent_dim, temperature_checked(temperature), seed), seed

    async def sample(
        self, model: ServedModel, n: int, temperature: float | None, seed: int | None, timeout_s
    ) -> tuple[work.Samples, int]:
        """``n`` draws from the model (z, E[x|z], x), and the seed they came from."""
        count = self.limits.sample_count(n)
        sampler, seed = self._sampler(model, temperature, seed)
        samples = await self.plane.run(model, work.SampleItem(sampler, count), "Sample", timeout_s)
        return samples, seed

    async def sample_stream(
        self,
        model: ServedModel,
        n: int,
        chunk_size: int,
        temperature: float | None,
        seed: int | None,
        time_remaining: Callable[[], float | None],
    ) -> AsyncIterator[tuple[work.Samples, int, int]]:
        """``sample``'s draws in chunks: (samples, seed, offset of the chunk's first draw) each;
        ``time_remaining()``: the call's deadline as each chunk is queued."""
        count = self.limits.stream_count(n)
        chunk = self.limits.chunk_size(chunk_size)
        sampler, seed = self._sampler(model, temperature, seed)
        for offset in range(0, count, chunk):
            item = work.SampleItem(sampler, min(chunk, count - offset))
            yield await self.plane.run(model, item, "SampleStream", time_remaining()), seed, offset

    async def bounds(
        self, model: ServedModel, x: np.ndarray, k: int, seed: int | None, method: str, timeout_s
    ) -> Bounds:
        """ELBO (and with ``k`` > 1 the IWAE bound) of each row, in nats."""
        x = self.inputs("x", model, x)
        k = self.limits.samples_per_row("k", k, len(x), 1)
        seed = fresh_seed() if seed is None else seed
        if not 0 <= seed < 2**64:
            raise InvalidInput(f"parameter 'seed': {seed} must be in 0..2^64-1")
        estimates = await self.plane.run(model, work.BoundsItem(x, k, seed), method, timeout_s)
        return Bounds(estimates, k, seed)

    async def score(
        self,
        model: ServedModel,
        x: np.ndarray,
        score: str,
        seed: int | None,
        false_positive_rate: float | None,
        score_threshold: float | None,
        return_feature_errors: bool,
        timeout_s,
        *,
        request_id: str = "",
    ) -> Scored:
        """Anomaly scores of each row under the calibrated ``score``, and the decision at a rate or threshold.

        The answered rows go to the score monitor and the decision log, when the server has them, as
        one ``ScoredEvent``; ``request_id``: the caller's x-request-id ("": the server makes one).

        Raises:
            NotCalibrated: the model has no calibration for ``score``.
        """
        manifest = model.bundle.manifest
        components = score_named(score).components
        # A combined score is decided against its own calibration and computed against its components'.
        # The registry says which scores a model can compute at all (pathway needs its graph).
        if score not in available_scores(model.bundle.vae):
            raise NotCalibrated(
                f"score {score}: model {manifest.name}:{manifest.version} has no pathway graph, which this score "
                "needs (vae-train's bundles have one; export_bundle writes one when given pathway and pathway_data); "
                "choose another score"
            )
        if not {score, *components} <= set(manifest.calibration.scores):
            raise NotCalibrated(
                f"score {score}: model {manifest.name}:{manifest.version} has no calibration for it; "
                "recalibrate it with `vae-train calibrate` or choose another score"
            )
        x = self.inputs("x", model, x)
        self.limits.samples_per_row("score samples", score_named(score).num_samples or 1, len(x), 1)
        rate, threshold = threshold_of(false_positive_rate, score_threshold)
        seed = fresh_seed() if seed is None else seed
        calibration = manifest.calibration.scores[score]
        calibrations = {name: manifest.calibration.scores[name] for name in components} if components else None
        item = work.ScoreItem(x, score, seed, calibration, rate, threshold, return_feature_errors, calibrations)
        outcome = await self.plane.run(model, item, "ScoreAnomaly", timeout_s)
        self.plane.count_scored(model, len(outcome.scores), int(outcome.decision.is_anomaly.sum()))
        if self.plane.watching:
            self.plane.watch(self._event(model, score, x, seed, rate is not None, outcome, request_id))
        return Scored(outcome, seed)

    def _event(
        self, model: ServedModel, score: str, x: np.ndarray, seed: int, rate_requested: bool, outcome, request_id: str
    ) -> ScoredEvent:
        """What monitoring and the decision log get of an answered score call: references, no copies."""
        manifest, decision = model.bundle.manifest, outcome.decision
        return ScoredEvent(
            model=manifest.name,
            version=manifest.version,
            score=score,
            calibration_rows=manifest.calibration.scores[score].num_examples,
            scores=outcome.scores,
            percentiles=decision.percentile,
            p_values=decision.p_value,
            flagged=decision.is_anomaly,
            threshold=decision.threshold,
            false_positive_rate=decision.false_positive_rate,
            rate_requested=rate_requested,
            seed=seed,
            request_id=request_id or uuid.uuid4().hex,
            trace_id=current_trace_id(),
            time_s=time.time(),
            inputs=x if self.plane.wants_inputs else None,
        )

    async def interpolate(
        self,
        model: ServedModel,
        ends: list[tuple[str, str, np.ndarray]],
        steps: int,
        spherical: bool,
        num_samples: int,
        seed: int | None,
        timeout_s,
    ) -> Path:
        """Paths from start to end rows, decoded: ``ends`` is (field, "x" or "z", rows) for the start
        and the end. Input ends are encoded first (both in one batch): a path runs from E[z|x]."""
        ends = [
            (kind, self.inputs(field, model, rows) if kind == "x" else self.latents(field, model, rows))
            for field, kind, rows in ends
        ]
        if len(ends[0][1]) != len(ends[1][1]):
            raise InvalidInput(f"start and end: {len(ends[0][1])} rows at the start, {len(ends[1][1])} at the end")
        paths = len(ends[0][1])
        steps = self.limits.samples_per_row("steps", steps, paths, 2)
        num_samples = self.limits.samples_per_row("num_samples", num_samples, paths * steps, 0)
        seed = fresh_seed() if seed is None else seed
        inputs = [rows for kind, rows in ends if kind == "x"]
        if inputs:  # both input ends in one encoder batch; a path starts or ends at E[z|x]
            item = work.EncodeItem(np.concatenate(inputs))
            z_mean, _, _ = await self.plane.run(model, item, "Interpolate", timeout_s, count=False)
            means = iter(np.split(z_mean, len(inputs)))
            ends = [("z", next(means)) if kind == "x" else (kind, rows) for kind, rows in ends]
        (_, start), (_, end) = ends
        # Every end lies within +-LATENT_LIMIT (the request's codes are checked, the encoder's means
        # boxed), so a spherical path's points, as long as its longer end, stay finite in float32.
        item = work.PathItem(start, end, steps, spherical, num_samples, seed)
        params, draws = await self.plane.run(model, item, "Interpolate", timeout_s)
        t, z = item.path
        x_mean = params["probs"] if "probs" in params else params["mean"]
        x_mean = x_mean.reshape(paths, steps, -1)
        draws = None if draws is None else draws.reshape(num_samples, paths, steps, -1)
        return Path(t, z, x_mean, draws, seed)
