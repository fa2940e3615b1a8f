"""PSPMixer: the SAR-KD-Flood student, a patch embedding followed by MLP-Mixer blocks (Tolstikhin et al. 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_matrix(size: int, scale: int) -> torch.Tensor:
    """[size * scale, size] matrix U with U @ v == F.interpolate(v, scale_factor=scale, mode="linear",
    align_corners=False) for a vector v of length `size` (the columns interpolate unit impulses)."""
    impulses = torch.eye(size, dtype=torch.float64)[None]                  # [1, size channels, size]
    return F.interpolate(impulses, scale_factor=scale, mode="linear", align_corners=False)[0].T.float()


class BilinearUpsample(nn.Module):
    """Bilinear upsampling by an integer factor (align_corners=False) as two matrix products,
    U @ x @ U^T per map: the same values as F.interpolate, but both passes run as matmuls, several
    times faster on the CPU than upsample_bilinear2d and its backward, and in bf16 under autocast."""

    def __init__(self, size: int, scale: int):
        super().__init__()
        self.register_buffer("matrix", bilinear_matrix(size, scale), persistent=False)

    def forward(self, x):  # [B, C, size, size] -> [B, C, size * scale, size * scale]
        matrix = self.matrix.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else self.matrix
        return matrix @ x @ matrix.T


class MixerBlock(nn.Module):
    """LayerNorm + token-mixing MLP, LayerNorm + channel-mixing MLP, each with a residual."""

    def __init__(self, tokens: int, hidden: int, tokens_mlp: int, channels_mlp: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(hidden)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, tokens_mlp), nn.GELU(), nn.Linear(tokens_mlp, tokens))
        self.channel_norm = nn.LayerNorm(hidden)
        self.channel_mlp = nn.Sequential(nn.Linear(hidden, channels_mlp), nn.GELU(), nn.Linear(channels_mlp, hidden))

    def forward(self, x):  # x: [B, tokens, hidden]
        x = x + self.token_mlp(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.channel_norm(x))


class PSPMixer(nn.Module):
    """Patch embedding (conv, kernel = stride = patch) to `hidden` channels, `depth` Mixer blocks, a 1x1
    head, bilinear upsampling by `patch`.

    The head runs before the upsampling: both are linear per pixel and bilinear weights sum to one, so
    the result is the same as upsampling first, at 1/patch^2 of the cost. The token MLP sees a fixed
    number of patches, which ties the model to `image_size`.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, image_size: int = 256, patch: int = 16,
                 hidden: int = 48, depth: int = 3, tokens_mlp: int | None = None, channels_mlp: int | None = None):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"PSPMixer: image_size {image_size} is not a multiple of patch {patch}")
        self.image_size, self.patch = image_size, patch
        self.grid = image_size // patch
        tokens = self.grid * self.grid
        self.embed = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, hidden, tokens_mlp or hidden, channels_mlp or 2 * hidden)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Conv2d(hidden, classes, 1)
        self.upsample = BilinearUpsample(self.grid, patch)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"PSPMixer was built for {self.image_size}x{self.image_size} inputs "
                             f"({self.grid}x{self.grid} patches of {self.patch} px); got {x.shape[-2]}x{x.shape[-1]}. "
                             f"Rebuild it with image_size={x.shape[-1]} or feed {self.image_size}x{self.image_size} tiles")
        tokens = self.embed(x).flatten(2).transpose(1, 2)          # [B, grid*grid, hidden]
        tokens = self.norm(self.blocks(tokens))
        features = tokens.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid)
        return self.upsample(self.head(features))
