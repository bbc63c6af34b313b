"""The convolutional encoder body and decoder of ``vae-train --arch conv``, for images [C, H, W].

Both take and return flat rows (the served graphs' interface) and reshape inside: stride-2 4x4
convolutions, each halving H and W, then a dense layer; the decoder mirrors them with stride-2
4x4 transposed convolutions (or ``--conv-decoder upsample``: nearest upsampling + 3x3
convolution). docs/benchmarks.md records the widths, depths and decoders measured.
"""

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

# Features of the dense layer between the convolutions and the latent code.
CONV_DENSE = 256


class ConvEncoderBody(nn.Module):
    """Rows [batch, C*H*W] -> [batch, C, H, W] -> stride-2 4x4 convolutions (each halves H and W)
    -> a dense layer of ``dense`` features."""

    def __init__(self, input_shape: tuple[int, int, int], channels: Sequence[int], dense: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise([input_shape[0], *channels]):
            layers += [nn.Conv2d(fan_in, fan_out, 4, stride=2, padding=1), nn.ReLU()]
        self.convolutions = nn.Sequential(*layers)
        height, width = conv_grid(input_shape, len(channels))
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * height * width, dense), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.convolutions(x.reshape(-1, *self.input_shape)))


class ConvDecoderNet(nn.Module):
    """z -> a dense layer -> [batch, channels[-1], H/2^n, W/2^n] -> stride-2 4x4 transposed
    convolutions (each doubles H and W) -> [batch, C*H*W] (logits or standardized means)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: Sequence[int],
        dense: int,
        latent_dim: int,
        upsampling: str = "transposed",
    ) -> None:
        super().__init__()
        self.grid = (channels[-1], *conv_grid(input_shape, len(channels)))
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, dense), nn.ReLU(), nn.Linear(dense, math.prod(self.grid)), nn.ReLU()
        )
        layers: list[nn.Module] = []
        widths = [*reversed(channels), input_shape[0]]
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layers += upsample_layer(fan_in, fan_out, upsampling)
            if index < len(widths) - 2:
                layers.append(nn.ReLU())
        self.deconvolutions = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvolutions(self.dense(z).reshape(-1, *self.grid)).flatten(1)


def upsample_layer(fan_in: int, fan_out: int, upsampling: str) -> list[nn.Module]:
    """Double H and W: a stride-2 4x4 transposed convolution, or nearest-neighbour upsampling then a
    3x3 convolution (no checkerboard artefacts from overlapping strides, Odena et al. 2016)."""
    if upsampling == "transposed":
        return [nn.ConvTranspose2d(fan_in, fan_out, 4, stride=2, padding=1)]
    if upsampling == "upsample":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(fan_in, fan_out, 3, padding=1)]
    raise ValueError(f"unknown conv decoder {upsampling!r}")


def conv_grid(input_shape: tuple[int, int, int], layers: int) -> tuple[int, int]:
    """H and W after ``layers`` halvings; they must divide exactly, so the decoder rebuilds the shape."""
    _, height, width = input_shape
    factor = 2**layers
    if height % factor or width % factor:
        raise ValueError(
            f"--arch conv with {layers} conv layers needs height and width divisible by {factor}; "
            f"got {height}x{width} (resize with --size, or give fewer --hidden channels)"
        )
    return height // factor, width // factor


def conv_input_shape(input_shape: Sequence[int] | None, num_features: int) -> tuple[int, int, int]:
    """[C, H, W] of a conv model's input: a 2-D example shape is one grey channel."""
    shape = tuple(input_shape or ())
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or math.prod(shape) != num_features:
        raise ValueError(
            f"--arch conv needs images [C, H, W] or [H, W]; this data's examples are {list(shape) or [num_features]}"
        )
    return shape
