"""The model factory: every architecture of the repository, built by name with keyword arguments.

    model = build_model("PSPMixer", patch=16, hidden=48, depth=3)

A checkpoint stores the name and the arguments, so `build_model(**checkpoint["model"])` rebuilds it.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import segmentation_models_pytorch as smp
import torch
from torch import nn

from lib.models.deepunet import DeepUNet
from lib.models.fcn import FCN8s
from lib.models.hrnet import HRNetV2Seg
from lib.models.mlp import MLP256
from lib.models.psp_mixer import PSPMixer
from lib.models.unet_classic import UNetClassic
from lib.models.unet_light import UnetLight


def smp_unet(in_channels: int = 1, classes: int = 1, encoder_name: str = "mobilenet_v2",
             encoder_depth: int = 5) -> nn.Module:
    """Teacher: smp Unet. Encoder weights are loaded separately (lib/train/encoder_weights.py)."""
    return smp.Unet(encoder_name=encoder_name, encoder_depth=encoder_depth, encoder_weights=None,
                    in_channels=in_channels, classes=classes)


def smp_pspnet(in_channels: int = 1, classes: int = 1, encoder_name: str = "mobilenet_v2",
               encoder_depth: int = 3) -> nn.Module:
    """Teacher: smp PSPNet. At encoder_depth 3 only the first MobileNetV2 stages run."""
    return smp.PSPNet(encoder_name=encoder_name, encoder_depth=encoder_depth, encoder_weights=None,
                      in_channels=in_channels, classes=classes)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "Unet": smp_unet,
    "PSPNet": smp_pspnet,
    "MLP_256": MLP256,
    "UnetLight": UnetLight,
    "PSPMixer": PSPMixer,
    # the KOMPSAT-5 water-segmentation family
    "FCN_VGG16": partial(FCN8s, backbone="vgg16"),
    "FCN_VGG19": partial(FCN8s, backbone="vgg19"),
    "UNet_Classic": UNetClassic,
    "DeepUNet": DeepUNet,
    "HRNet": HRNetV2Seg,
}


def build_model(name: str, args: dict | None = None) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name](**(args or {}))


def used_parameters(model: nn.Module, image_size: int = 256, in_channels: int = 1) -> list[nn.Parameter]:
    """Parameters that take part in the forward pass, found by one backward pass on a dummy input.

    smp's PSPNet at encoder_depth 3 holds all MobileNetV2 stages but runs only the first ones; handing
    the idle ones to the optimizer would only cost memory and weight-decay work.
    """
    was_training = model.training
    model.eval()  # no BatchNorm statistics update from the dummy batch
    saved = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    with torch.enable_grad():
        model(torch.zeros(2, in_channels, image_size, image_size, device=device)).sum().backward()
    used = [p for p in model.parameters() if p.grad is not None]
    for name, p in model.named_parameters():
        p.grad = saved[name]
    model.train(was_training)
    return used


def parameter_counts(model: nn.Module, image_size: int = 256, in_channels: int = 1) -> dict[str, int]:
    """{"held": all parameters, "used": those in the forward pass}."""
    return {"held": sum(p.numel() for p in model.parameters()),
            "used": sum(p.numel() for p in used_parameters(model, image_size, in_channels))}
