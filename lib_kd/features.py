"""Intermediate feature maps of a student and a teacher, read with forward hooks (no change to any forward).

A layer is named by its module path in `model.named_modules()`: "decoder" is that module's output,
"head:input" the (first) input of module "head". The default of each architecture of lib/models/factory.py is its
last spatial feature map, the one its 1x1 classifier reads (PSPMixer: the token grid, [hidden, S/patch,
S/patch]); KD_FEATURE_STUDENT_LAYER / KD_FEATURE_TEACHER_LAYER override it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.errors import ConfigError

# architecture -> the map its classifier reads
DEFAULT_LAYERS = {
    "PSPMixer": "head:input",      # the token grid after the last Mixer block and LayerNorm
    "UnetLight": "decoder",
    "MLP_256": None,               # None: the input of the last Conv2d (the per-pixel 16-channel features)
    "Unet": "decoder",
    "PSPNet": "decoder",           # pyramid-pooled features at 1/8
    "FCN_VGG16": "fc",             # fc7 at 1/32
    "FCN_VGG19": "fc",
    "UNet_Classic": "head:input",
    "DeepUNet": "head:input",
    "HRNet": "fuse",               # the fused four-branch map at 1/4
}


def default_layer(name: str, model: nn.Module) -> str:
    layer = DEFAULT_LAYERS.get(name)
    if layer:
        return layer
    convs = [module_name for module_name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{name} has no Conv2d layer; name a feature map with KD_FEATURE_STUDENT_LAYER / "
                          f"KD_FEATURE_TEACHER_LAYER")
    return f"{convs[-1]}:input"


class FeatureTap:
    """Records one feature map of `model` at every forward while `active` (a forward hook, removable)."""

    def __init__(self, model: nn.Module, layer: str, constant: str):
        module_name, _, where = layer.partition(":")
        if where not in ("", "input", "output"):
            raise ConfigError(f"{constant}={layer!r}: expected 'module' or 'module:input'")
        modules = dict(model.named_modules())
        if module_name not in modules:
            names = [n for n in modules if n][:12]
            raise ConfigError(f"{constant}={layer!r}: {type(model).__name__} has no module {module_name!r}; "
                              f"some of its modules: {', '.join(names)}")
        self.layer, self.active, self.value = layer, False, None
        module = modules[module_name]
        if where == "input":
            self.handle = module.register_forward_pre_hook(lambda m, args: self.record(args[0]))
        else:
            self.handle = module.register_forward_hook(lambda m, args, output: self.record(output))

    def record(self, tensor) -> None:
        if self.active:
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ConfigError(f"feature layer {self.layer!r} gives {shape}, not a spatial map [B, C, H, W]")
            self.value = tensor

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError(f"feature layer {self.layer!r} did not run in the forward pass")
        return value

    def remove(self) -> None:
        self.handle.remove()


@dataclass
class FeatureShape:
    channels: int
    height: int
    width: int


def probe(model: nn.Module, layer: str, constant: str, image_size: int, in_channels: int = 1) -> FeatureShape:
    """Shape of `layer`'s map for one image_size x image_size input (one forward on zeros, eval mode)."""
    tap = FeatureTap(model, layer, constant)
    was_training = model.training
    model.eval()
    try:
        tap.active = True
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
        value = tap.take()
    finally:
        tap.remove()
        model.train(was_training)
    return FeatureShape(int(value.shape[1]), int(value.shape[2]), int(value.shape[3]))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
