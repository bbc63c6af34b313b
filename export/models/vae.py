"""The VAE in PyTorch: an encoder and a decoder kept apart, because they become two ONNX graphs.

Importing this module has no side effects. Graph input/output names match ``vae_serve.core.runtime``.
"""

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vae_serve.export.models.conv import CONV_DENSE, ConvDecoderNet, ConvEncoderBody, conv_input_shape

LOG_2PI = math.log(2.0 * math.pi)
# Gaussian decoders: the learned per-feature scale, in standardized units, never drops below this.
# Without a floor a constant feature (digits' border pixels) drives the variance to zero and the
# likelihood to infinity.
MIN_STANDARDIZED_SCALE = 0.01


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear + ReLU for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


class FeatureScaling(nn.Module):
    """Per-feature standardization (x - loc) / scale, stored as buffers so it is part of the graphs."""

    def __init__(self, num_features: int, loc: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(num_features) if loc is None else loc.float())
        self.register_buffer("scale", torch.ones(num_features) if scale is None else scale.float())

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale

    def unstandardize(self, standardized: torch.Tensor) -> torch.Tensor:
        return standardized * self.scale + self.loc


class Encoder(nn.Module):
    """x [batch, D] (or [batch, *input_shape]) -> (z_mean, z_logvar), each [batch, latent].

    ``scaling`` standardizes the input inside the graph (Gaussian likelihoods); ``body`` maps the
    standardized rows to ``hidden_size`` features: an MLP, or ``ConvEncoderBody``.
    """

    def __init__(self, body: nn.Module, hidden_size: int, latent_dim: int, scaling: FeatureScaling) -> None:
        super().__init__()
        self.scaling = scaling
        self.body = body
        self.mean = nn.Linear(hidden_size, latent_dim)
        self.logvar = nn.Linear(hidden_size, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(self.scaling.standardize(x.flatten(1)))
        return self.mean(hidden), self.logvar(hidden)


class EncoderPathway(nn.Module):
    """x [batch, D] -> the encoder's hidden activations, the layers of the ``pathway`` score: each ReLU
    output of an MLP body; of a conv body only its dense layer (a feature map of thousands of values
    per channel would need a covariance too large to fit on the training rows)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder.scaling.standardize(x.flatten(1))
        body = self.encoder.body
        if isinstance(body, ConvEncoderBody):
            return (body(hidden),)
        layers = []
        for layer in body:
            hidden = layer(hidden)
            if isinstance(layer, nn.ReLU):
                layers.append(hidden)
        return tuple(layers)


class BernoulliDecoder(nn.Module):
    """z -> logits l; log p(x|z) = sum_d x_d l_d - softplus(l_d). ``net`` maps z to [batch, D]."""

    output_names = ("logits",)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(z),)

    @staticmethod
    def log_prob(x: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (logits,) = outputs
        target = x.expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


class GaussianDecoder(nn.Module):
    """z -> (mean, log_scale) in raw feature units, with a learned scale that does not depend on z.

    ``net`` maps z to the standardized means [batch, D].
    In standardized units the scale is MIN_STANDARDIZED_SCALE + softplus(rho_d); the graph maps
    both parameters back through the feature scaling, so log p(x|z) is a density over the raw features.
    ``shared_scale``: one sigma for every feature (with a scaling shared by every feature), set
    analytically as in Rybkin et al. 2021's optimal-sigma VAE: while training, each batch uses the
    sigma that maximises its likelihood, sqrt(mean squared error); after each epoch rho is set to
    the epoch's value, so the exported graph carries it. Gradient steps on a single rho would take
    thousands of steps to get there.
    ``standardized_residuals`` (with ``shared_scale`` and a per-feature scaling): the one sigma is
    in standardized units, sigma_d = sigma * feature_scale_d, set from the mean squared
    *standardized* error; a feature that hardly varies in training then weighs heavily.
    """

    output_names = ("mean", "log_scale")

    def __init__(
        self,
        net: nn.Module,
        num_features: int,
        scaling: FeatureScaling,
        shared_scale: bool = False,
        standardized_residuals: bool = False,
    ) -> None:
        super().__init__()
        self.scaling = scaling
        self.net = net
        # softplus(0.5413) = 1: start at unit standardized scale.
        self.rho = nn.Parameter(torch.full((1 if shared_scale else num_features,), 0.5413))
        self.shared_scale = shared_scale
        self.standardized_residuals = standardized_residuals
        self._squared_error = [0.0, 0]  # sum of batch mean squared errors, batches: this epoch's

    def batch_log_scale(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """Shared scale while training: the batch's maximum-likelihood log sigma, floored as the graph's."""
        if self.standardized_residuals:
            return self._batch_log_scale_standardized(x, mean)
        mse = ((x - mean) ** 2).mean()
        self._squared_error[0] += float(mse.detach())
        self._squared_error[1] += 1
        floor = math.log(MIN_STANDARDIZED_SCALE) + torch.log(self.scaling.scale[0])
        return torch.maximum(0.5 * torch.log(mse), floor).expand_as(mean)

    def _batch_log_scale_standardized(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        mse = (((x - mean) / self.scaling.scale) ** 2).mean()
        self._squared_error[0] += float(mse.detach())
        self._squared_error[1] += 1
        log_sigma = torch.clamp(0.5 * torch.log(mse), min=math.log(MIN_STANDARDIZED_SCALE))
        return (log_sigma + torch.log(self.scaling.scale)).expand_as(mean)

    @torch.no_grad()
    def fix_scale(self) -> None:
        """Shared scale: set rho so the graph's sigma is the root of this epoch's mean squared error."""
        total, batches = self._squared_error
        if not self.shared_scale or batches == 0:
            return
        root_mse = math.sqrt(total / batches)
        unit = 1.0 if self.standardized_residuals else float(self.scaling.scale[0])
        standardized = root_mse / unit - MIN_STANDARDIZED_SCALE
        target = max(standardized, 1e-4)
        self.rho.fill_(target + math.log(-math.expm1(-target)))  # softplus^-1
        self._squared_error = [0.0, 0]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        standardized_mean = self.net(z)
        log_scale = torch.log(MIN_STANDARDIZED_SCALE + F.softplus(self.rho)) + torch.log(self.scaling.scale)
        return self.scaling.unstandardize(standardized_mean), log_scale.expand_as(standardized_mean)

    @staticmethod
    def log_prob(x: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        mean, log_scale = outputs
        standardized = (x - mean) * torch.exp(-log_scale)
        return (-0.5 * LOG_2PI - log_scale - 0.5 * standardized**2).sum(-1)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), Kingma & Welling 2014, Appendix B."""
    return 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(-1)


def reparameterized_log_prob(noise: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) of z = mean + exp(logvar / 2) * noise, from the noise: finite even when a posterior's
    standard deviation underflows (then z == mean and (z - mean)^2 / var would be 0 * inf)."""
    return (-0.5 * (LOG_2PI + logvar + noise**2)).sum(-1)


class Vae(nn.Module):
    """Encoder + decoder + the training objective and the bounds used for evaluation."""

    def __init__(self, encoder: Encoder, decoder: BernoulliDecoder | GaussianDecoder, likelihood: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood

    def loss(self, x: torch.Tensor, kl_weight: float, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, mean ELBO estimate) for a batch.

        One draw: the loss is the mean of -(recon - kl_weight * KL) with the closed-form KL.
        ``num_samples`` > 1: the loss is the negative IWAE-k bound (Burda et al. 2016), the
        log-mean-exp over k reparameterised draws of log p(x|z) + kl_weight * (log p(z) - log q(z|x)).
        The ELBO returned for the progress log is the mean single-draw estimate in both cases.
        """
        if num_samples > 1:
            return self._iwae_loss(x, kl_weight, num_samples)
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = self.decoder.log_prob(x, self._training_outputs(x, self.decoder(z)))
        kl = kl_to_standard_normal(mean, logvar)
        return -(reconstruction - kl_weight * kl).mean(), (reconstruction - kl).mean()

    def _iwae_loss(self, x: torch.Tensor, kl_weight: float, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x)
        log_px_z, log_pz, log_qz = self._log_density_terms(x, mean, logvar, num_samples)
        log_weights = log_px_z + kl_weight * (log_pz - log_qz)
        bound = torch.logsumexp(log_weights, 0) - math.log(num_samples)
        return -bound.mean(), (log_px_z + log_pz - log_qz).mean()

    def _log_density_terms(
        self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, num_samples: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z), log q(z|x)), each [samples, batch], for reparameterised z ~ q(z|x)."""
        noise = torch.randn(num_samples, *mean.shape)
        z = mean + torch.exp(0.5 * logvar) * noise
        outputs = self.decoder(z.reshape(-1, z.shape[-1]))
        outputs = self._training_outputs(x, tuple(value.reshape(num_samples, len(x), -1) for value in outputs))
        log_pz = (-0.5 * (LOG_2PI + z**2)).sum(-1)
        return self.decoder.log_prob(x, outputs), log_pz, reparameterized_log_prob(noise, logvar)

    def _training_outputs(self, x: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The decoder's outputs, with a shared Gaussian scale replaced by the batch's optimum in training."""
        if not (self.training and getattr(self.decoder, "shared_scale", False)):
            return outputs
        return outputs[0], self.decoder.batch_log_scale(x, outputs[0])

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w [samples, batch], closed-form ELBO [batch]) with w = p(x|z) p(z) / q(z|x)."""
        mean, logvar = self.encoder(x)
        log_px_z, log_pz, log_qz = self._log_density_terms(x, mean, logvar, num_samples)
        return log_px_z + log_pz - log_qz, log_px_z.mean(0) - kl_to_standard_normal(mean, logvar)


def build_vae(
    num_features: int,
    hidden: Sequence[int],
    latent_dim: int,
    likelihood: str,
    loc: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shared_scale: bool = False,
    arch: str = "mlp",
    input_shape: Sequence[int] | None = None,
    standardized_residuals: bool = False,
    conv_decoder: str = "transposed",
) -> Vae:
    """A fresh VAE; ``loc``/``scale`` (Gaussian only) standardize features inside both graphs;
    ``shared_scale`` (Gaussian only) learns one decoder scale for all features instead of one each.

    ``arch`` "mlp": ``hidden`` are the layer sizes (the decoder mirrors them). "conv": ``hidden``
    are the channels of the stride-2 convolutions, each followed by ReLU, then a dense layer of
    CONV_DENSE features; the decoder mirrors it with transposed convolutions. ``input_shape`` is
    [C, H, W] (a 2-D shape is one grey channel).
    """
    scaling = FeatureScaling(num_features, loc, scale)
    if arch == "mlp":
        encoder = Encoder(mlp([num_features, *hidden]), hidden[-1], latent_dim, scaling)
        decoder_net = nn.Sequential(*mlp([latent_dim, *reversed(hidden)]), nn.Linear(hidden[0], num_features))
    elif arch == "conv":
        shape = conv_input_shape(input_shape, num_features)
        encoder = Encoder(ConvEncoderBody(shape, hidden, CONV_DENSE), CONV_DENSE, latent_dim, scaling)
        decoder_net = ConvDecoderNet(shape, hidden, CONV_DENSE, latent_dim, conv_decoder)
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    if likelihood == "bernoulli":
        decoder = BernoulliDecoder(decoder_net)
    elif likelihood == "gaussian":
        decoder = GaussianDecoder(decoder_net, num_features, scaling, shared_scale, standardized_residuals)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}")
    return Vae(encoder, decoder, likelihood)
