"""UNetClassic: the U-Net of Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation" (MICCAI 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convs (padding 1), each followed by BatchNorm (optional) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """2x2 transposed conv (stride 2) halving the channels, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm)

    def forward(self, x, skip):
        x = self.up(x)
        # a side that was odd before pooling comes back one short: pad bottom/right to the skip's size
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, (0, dw, 0, dh))
        return self.conv(torch.cat([skip, x], dim=1))


class UNetClassic(nn.Module):
    """U-Net (Ronneberger et al. 2015): a contracting path of DoubleConv stages 64-128-256-512-1024
    (x `base_channels` / 64) with four 2x2 max-pools, an expanding path of four 2x2 transposed convs,
    each concatenated with the matching contracting stage, a 1x1 head.

    Choices that differ from the paper or where it is silent:
    - 3x3 convs use padding=1 ("same"), so the output has the input size and no crop of the skips is
      needed; the paper uses unpadded convs (572 -> 388) with overlap-tile inference.
    - `batch_norm=True` adds BatchNorm after each conv (the paper predates BN; from-scratch training on
      SAR is much more stable with it); convs then carry no bias. `batch_norm=False` gives the plain net.
    - Dropout `dropout` (0.5, as in the paper's "drop-out layers at the end of the contracting path") on
      the 1024-channel bottom stage's output.
    - Input sides should be multiples of 16; other sizes still work: max-pool floors, and the upsampled
      map is zero-padded at the bottom/right to its skip's size.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, base_channels: int = 64, batch_norm: bool = True,
                 dropout: float = 0.5):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(DoubleConv(channels, width, batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], batch_norm) for i in reversed(range(4)))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, stage in enumerate(self.down):
            if i:
                skips.append(x)
                x = self.pool(x)
            x = stage(x)
        x = self.dropout(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)
