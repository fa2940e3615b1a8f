"""UnetLight: the SAR-KD-Flood student, a depth-1 U-Net without skip connections (about 12K parameters)."""
from __future__ import annotations

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class UnetLight(nn.Module):
    """Two 3x3 conv(16) blocks, 2x max-pool, a 3x3 conv(32) bottleneck, a 2x transposed conv back to 16
    channels, one 3x3 conv(16) and a 1x1 head. Input sides must be even."""

    def __init__(self, in_channels: int = 1, classes: int = 1, width: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(conv_bn_relu(in_channels, width), conv_bn_relu(width, width))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_bn_relu(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2)
        self.decoder = conv_bn_relu(width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(f"UnetLight needs even input sides, got {tuple(x.shape[-2:])}")
        x = self.bottleneck(self.pool(self.encoder(x)))
        return self.head(self.decoder(self.up(x)))
