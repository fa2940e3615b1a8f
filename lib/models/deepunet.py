"""DeepUNet: Li, Liu, Yang, Sun, Hu, Zhang and Li, "DeepUNet: A Deep Fully Convolutional Network for
Pixel-level Sea-Land Segmentation" (IEEE JSTARS 2018, arXiv:1709.00201)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """3x3 conv (padding 1) + optional BatchNorm, no activation."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class DownBlock(nn.Module):
    """2x2 max-pool, conv(64) + ReLU, conv(32), plus the pooled input, ReLU.
    Returns the ReLU output, which both feeds the next block and is this level's U-connection."""

    def __init__(self, width: int, hidden: int, batch_norm: bool):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv1 = conv_bn(width, hidden, batch_norm)
        self.conv2 = conv_bn(hidden, width, batch_norm)

    def forward(self, x):
        x = self.pool(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class UpBlock(nn.Module):
    """2x nearest upsampling, concatenation with the U-connection, conv(64) + ReLU, conv(32), plus the
    upsampled input, ReLU."""

    def __init__(self, width: int, hidden: int, batch_norm: bool):
        super().__init__()
        self.conv1 = conv_bn(2 * width, hidden, batch_norm)
        self.conv2 = conv_bn(hidden, width, batch_norm)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        y = F.relu(self.conv1(torch.cat([skip, x], dim=1)))
        return F.relu(self.conv2(y) + x)


class DeepUNet(nn.Module):
    """DeepUNet (Li et al. 2018): a stem, seven DownBlocks and seven UpBlocks with U-connections
    (concatenated skips) between matching levels and Plus connections (residual adds at `width` = 32
    channels) inside every block, then a 1x1 head.

    Each block is a 3x3 conv to `hidden` = 64 channels + ReLU and a 3x3 conv back to `width` = 32
    channels whose output is added to the block's input ("plus" layer), followed by ReLU.

    Choices where the paper is silent or ambiguous:
    - Where the pooling sits: the paper's block figure draws it at the end of the DownBlock. Taken
      literally, the seventh pooled map would reach the decoder with no convolution applied at its
      resolution. We follow the authors' released code (shsun-xq/DeepUNet, trainSealand.py), which pools
      at the start of each DownBlock and takes the skip after the plus: the stem works at full resolution,
      DownBlock k at 1/2^k (down to 1/128), and the seven UpBlocks take the U-connections of DownBlocks
      6..1 and then of the stem.
    - The first block's plus needs a 32-channel input, so a stem (conv(64) + ReLU, conv(32) + ReLU, no
      plus, no pooling) maps the single SAR band to 32 channels at full resolution; the released code uses
      conv(32), conv(64), conv(32) there.
    - The UpBlock plus adds the upsampled input (released code); upsampling is nearest-neighbour.
    - `batch_norm=True` puts BatchNorm after every conv, before the plus for the second one (released
      code; the paper does not mention it). The released code's deep supervision heads at 1/2-1/8 are
      left out: one full-resolution 1x1 head gives the logits.
    - Seven poolings need input sides that are multiples of 128. Other sizes are padded internally at
      the bottom/right (reflect, or replicate when the pad is not smaller than the side) up to the next
      multiple of 128, and the logits are cropped back, so any input size works.
    """

    depth = 7

    def __init__(self, in_channels: int = 1, classes: int = 1, width: int = 32, hidden: int = 64,
                 batch_norm: bool = True):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, hidden, batch_norm), nn.ReLU(inplace=True),
                                  conv_bn(hidden, width, batch_norm), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(DownBlock(width, hidden, batch_norm) for _ in range(self.depth))
        self.up = nn.ModuleList(UpBlock(width, hidden, batch_norm) for _ in range(self.depth))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        stride = 2 ** self.depth
        pad_h, pad_w = -h % stride, -w % stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
        return self.head(x)[..., :h, :w]
