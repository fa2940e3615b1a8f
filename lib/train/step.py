"""One optimizer step, written once: training (lib/train/engine.py), the speed benchmark (lib/bench/speed.py) and the
distillation cost measurement (lib_kd/speed_kd.py) all call `optimizer_step`, so what is measured is
what trains.

    optimization = Optimization.for_precision(optimizer, "bf16", device, lr=5e-4, warmup_steps=30)
    loss, extras = optimizer_step(net, objective, images, targets, optimization, step)

`objective(model, images, targets) -> (loss, {column: value})` is the engine's loss plug-in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.runtime import autocast


class SupervisedObjective:
    """Focal Tversky loss on the model's logits."""
    columns: tuple[str, ...] = ()

    def __init__(self, loss_fn: nn.Module):
        self.loss_fn = loss_fn

    def __call__(self, model, images, targets):
        return self.loss_fn(model(images), targets), {}


@dataclass
class Optimization:
    """What a step needs besides the model and the batch. The learning rate rises linearly over the
    first `warmup_steps` steps, from lr / warmup_steps to `lr` (none when warmup_steps is 0)."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str = "fp32"
    lr: float = 0.0
    warmup_steps: int = 0

    @classmethod
    def for_precision(cls, optimizer: torch.optim.Optimizer, precision: str, device: torch.device, lr: float = 0.0,
                      warmup_steps: int = 0) -> "Optimization":
        """With the grad scaler `precision` needs: loss scaling under fp16 only (bf16 and fp32 keep float32's
        exponent range, so the scaler passes through)."""
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        return cls(optimizer, scaler, precision, lr, warmup_steps)


def warm_up(optimization: Optimization, step: int) -> None:
    """Set the learning rate of step `step` (counted from 0 over the whole run) while warming up."""
    if step < optimization.warmup_steps:
        for group in optimization.optimizer.param_groups:
            group["lr"] = optimization.lr * (step + 1) / optimization.warmup_steps


def optimizer_step(net: nn.Module, objective, images: torch.Tensor, targets: torch.Tensor,
                   optimization: Optimization, step: int = 0) -> tuple[torch.Tensor, dict]:
    """Warm-up learning rate, forward and loss under autocast, zero_grad, backward and optimizer step
    through the grad scaler (a no-op pass-through unless fp16). Returns the objective's (loss, extras)."""
    warm_up(optimization, step)
    with autocast(images.device, optimization.precision):
        loss, extras = objective(net, images, targets)
    optimization.optimizer.zero_grad(set_to_none=True)
    optimization.scaler.scale(loss).backward()
    optimization.scaler.step(optimization.optimizer)
    optimization.scaler.update()
    return loss, extras
