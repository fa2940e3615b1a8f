"""MLP_256: the per-pixel baseline of SAR-KD-Flood, an MLP applied to every pixel as 1x1 convolutions."""
from __future__ import annotations

from torch import nn


class MLP256(nn.Module):
    """1x1 convolutions 128-64-32-16-1 with BatchNorm + ReLU (+ optional dropout) between them.

    Few parameters (about 11.6K) but not cheap: 128 channels run through each of the 65,536 pixels.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, widths=(128, 64, 32, 16), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [nn.Conv2d(previous, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            previous = width
        layers.append(nn.Conv2d(previous, classes, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
