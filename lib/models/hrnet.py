"""HRNetV2Seg: the HRNetV2 segmentation network of Wang, Sun et al., "Deep High-Resolution Representation
Learning for Visual Recognition" (TPAMI 2020; Sun et al., arXiv:1904.04514 for HRNetV2)."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn


class HRNetV2Seg(nn.Module):
    """HRNetV2: the four parallel branch outputs of the final HRNet stage (1/4, 1/8, 1/16, 1/32; 18, 36,
    72, 144 channels for W18), the lower three bilinearly upsampled to 1/4 and concatenated (270 channels
    for W18), a 1x1 conv-BN-ReLU keeping that width, a 1x1 classifier, bilinear upsampling to the input.

    The backbone is timm's HRNet (`variant`, e.g. "hrnet_w18", "hrnet_w48", any timm hrnet name), built
    with random weights and `in_chans=in_channels`. timm's `features_only` model by default returns the
    "incre" features (the classification head's bottleneck blocks, 128-1024 channels), not the raw
    branches; `feature_location=""` skips them and returns the raw branch outputs, and
    `out_indices=(1, 2, 3, 4)` drops the stride-2 stem tap.

    Choices: the head convs carry no bias before BN (the reference head has one; it is redundant there);
    bilinear upsampling uses align_corners=False. The backbone's fuse layers upsample by exact factors of
    2, so input sides must be multiples of 32; other sizes are padded internally at the bottom/right
    (reflect, or replicate when the pad is not smaller than the side) and the logits cropped back.
    """

    stride = 32

    def __init__(self, in_channels: int = 1, classes: int = 1, variant: str = "hrnet_w18"):
        super().__init__()
        self.backbone = timm.create_model(variant, pretrained=False, features_only=True, in_chans=in_channels,
                                          feature_location="", out_indices=(1, 2, 3, 4))
        channels = sum(self.backbone.feature_info.channels())
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        branches = self.backbone(x)
        size = branches[0].shape[-2:]
        x = torch.cat([branches[0]] + [F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                                       for b in branches[1:]], dim=1)
        x = self.classifier(self.fuse(x))
        x = F.interpolate(x, size=(h + pad_h, w + pad_w), mode="bilinear", align_corners=False)
        return x[..., :h, :w]
