"""FCN8s: the fully convolutional network of Long, Shelhamer and Darrell, "Fully Convolutional Networks for
Semantic Segmentation" (CVPR 2015), in its stride-8 form (FCN-8s) on a VGG16 or VGG19 trunk."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# VGG conv stages (Simonyan & Zisserman 2015): the 3x3 conv widths of each stage; a 2x max-pool ends each.
VGG_STAGES = {
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                         bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


def vgg_stage(in_channels: int, widths: list[int], batch_norm: bool) -> nn.Sequential:
    """3x3 convs (+BN) + ReLU, then a 2x2 max-pool in ceil mode (as in the Caffe original), so a side of n
    becomes ceil(n / 2) and every input size works."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += conv_relu(in_channels, width, 3, batch_norm)
        in_channels = width
    layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """The [k, k] kernel of a transposed conv that upsamples bilinearly (the FCN upsampling initialisation)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    return taps[:, None] * taps[None, :]


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Top-left crop to `size`. All convs are 'same' padded and the pools are ceil mode, so every
    feature map is aligned with the input at its top-left corner and an upsampled map is never smaller
    than its target; the original's offset crops (5, 9, 31) only undo its padding of 100."""
    return x[..., : size[0], : size[1]]


class FCN8s(nn.Module):
    """FCN-8s (Long et al. 2015): VGG conv stages, fc6/fc7 as convolutions, 1x1 score layers on pool3,
    pool4 and fc7, fused by a learned 2x upsampling (fc7 + pool4), another learned 2x upsampling
    (+ pool3), then a fixed bilinear 8x upsampling back to the input size.

    Choices where the paper does not fit this setting:
    - The VGG stages are built here from a config list (`backbone` "vgg16" or "vgg19"), so a single-band
      SAR input is just `in_channels=1`; `base_channels` scales all stage widths (64 -> 64-128-256-512-512).
    - fc6 is a `fc_kernel` x `fc_kernel` conv (7x7 as in the paper, padding 3 so the 1/32 map keeps its
      size instead of needing the original's padding of 100), fc7 a 1x1 conv, both `fc_width` wide with
      dropout `dropout` (0.5 as in the paper). `fc_width` defaults to 1024, not 4096: the 4096 width exists
      to hold ImageNet-pretrained classifier weights, which are not used here (no pretraining, one output
      class); at 4096 fc6 alone would hold 103M of the parameters, at 1024 it holds 26M.
    - `batch_norm=True` puts BatchNorm after every conv of the trunk and fc6/fc7 (convs then have no
      bias). The paper fine-tunes an ImageNet VGG; trained from scratch a 16/19-layer plain VGG without
      normalisation converges poorly, so BN is the default. `batch_norm=False` gives the plain layers.
    - Initialisation: the skip score layers (pool3, pool4) start at zero, as in the paper, so training
      starts from the FCN-32s prediction; the 2x upsamplings are transposed convs (kernel 4, stride 2),
      bilinear-initialised and learned, as in the paper. The final 8x upsampling is fixed bilinear, as in
      the paper, done with F.interpolate (align_corners=False): the same as the paper's fixed bilinear
      deconvolution away from the border, but it clamps at the border instead of fading the outer 4
      pixels towards zero. The fc7 score layer keeps PyTorch's default init: without a pretrained trunk
      a zero score layer there would block the first gradient to the trunk.
    - Any input size works: ceil-mode pools plus top-left crops (see `crop_to`); for sides that are
      multiples of 32 no crop removes anything.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, backbone: str = "vgg16", fc_width: int = 1024,
                 fc_kernel: int = 7, batch_norm: bool = True, dropout: float = 0.5, base_channels: int = 64):
        super().__init__()
        if backbone not in VGG_STAGES:
            raise ValueError(f"FCN8s: unknown backbone {backbone!r}; choose one of {', '.join(VGG_STAGES)}")
        if fc_kernel % 2 == 0:
            raise ValueError(f"FCN8s: fc_kernel must be odd to keep the 1/32 map size, got {fc_kernel}")
        stages = []
        channels = in_channels
        stage_channels = []
        for widths in VGG_STAGES[backbone]:
            widths = [w * base_channels // 64 for w in widths]
            stages.append(vgg_stage(channels, widths, batch_norm))
            channels = widths[-1]
            stage_channels.append(channels)
        self.stage1, self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.fc = nn.Sequential(*conv_relu(channels, fc_width, fc_kernel, batch_norm), nn.Dropout2d(dropout),
                                *conv_relu(fc_width, fc_width, 1, batch_norm), nn.Dropout2d(dropout))
        self.score_fc = nn.Conv2d(fc_width, classes, 1)
        self.score_pool4 = nn.Conv2d(stage_channels[3], classes, 1)
        self.score_pool3 = nn.Conv2d(stage_channels[2], classes, 1)
        self.up_fc = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.up_pool4 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        for score in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        for up in (self.up_fc, self.up_pool4):
            with torch.no_grad():
                up.weight.zero_()
                for c in range(classes):  # per-class bilinear, no mixing between classes
                    up.weight[c, c] = bilinear_kernel(4)

    def forward(self, x):
        size = x.shape[-2:]
        pool3 = self.stage3(self.stage2(self.stage1(x)))
        pool4 = self.stage4(pool3)
        score = self.score_fc(self.fc(self.stage5(pool4)))
        score = crop_to(self.up_fc(score), pool4.shape[-2:]) + self.score_pool4(pool4)
        score = crop_to(self.up_pool4(score), pool3.shape[-2:]) + self.score_pool3(pool3)
        score = F.interpolate(score, scale_factor=8, mode="bilinear", align_corners=False)
        return crop_to(score, size)


# the model constants of train_fcn_vgg16.py and train_fcn_vgg19.py -> FCN8s keyword arguments: the two scripts
# differ only in their backbone (model name) and OUTPUT_DIR
FCN_CONSTANTS = {"base_channels": "BASE_CHANNELS", "fc_width": "FC_WIDTH", "fc_kernel": "FC_KERNEL",
                 "batch_norm": "BATCH_NORM", "dropout": "DROPOUT"}


def fcn_args(c) -> dict:
    """FCN8s keyword arguments from a train script's constants."""
    return {arg: c[name] for arg, name in FCN_CONSTANTS.items()}
