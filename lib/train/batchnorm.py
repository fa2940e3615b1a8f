"""BatchNorm running statistics re-estimated with the weights that are scored.

A run on a few real chips makes a couple of optimizer steps per epoch at a learning rate that moves the
weights far each step. BatchNorm's running statistics are an exponential average (momentum 0.1) of the
batch statistics of about the last ten steps, i.e. of weights several epochs old: in eval mode such a model
gave a constant answer (all land, p 0.29..0.51) on the very training patches on which, with batch statistics,
it scored IoU 0.62 (docs/real-sar.md#the-collapse). Before each validation the engine therefore recomputes
the running statistics as a plain average over up to `max_batches` (4) training batches of the current weights
(Precise BN, as in Detectron2 and torch.optim.swa_utils.update_bn). Models without BatchNorm are untouched.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lib.runtime import autocast

# a forward pass each, no backward: 4 batches hold every patch of a few chips (16 patches in batches of 4 or
# more) and millions of pixels per channel on a large split, at a quarter of an epoch's forward passes of the
# quick start (15 batches of 8)
MAX_BATCHES = 4


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                      memory_format: torch.memory_format = torch.contiguous_format, max_batches: int = MAX_BATCHES) -> int:
    """Recompute every BatchNorm layer's running mean and variance over up to `max_batches` batches of `loader`
    with the current weights; returns the number of batches used (0: no BatchNorm, nothing done)."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    used = 0
    for images, _, _ in loader:
        with autocast(device, precision):
            model(images.to(device, non_blocking=True, memory_format=memory_format))
        used += 1
        if used >= max_batches:
            break
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    if dist.is_available() and dist.is_initialized():
        pool_across_ranks(layers)
    model.train(was_training)
    return used


def pool_across_ranks(layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
    """Under torchrun each rank saw its own shard: pool the moments (every rank the same number of batches),
    so that every rank validates, and rank 0 saves, one and the same model."""
    world = dist.get_world_size()
    for layer in layers:
        second = layer.running_var + layer.running_mean ** 2  # E[x^2] of this rank
        dist.all_reduce(layer.running_mean)
        dist.all_reduce(second)
        layer.running_mean /= world
        layer.running_var.copy_(second / world - layer.running_mean ** 2)
