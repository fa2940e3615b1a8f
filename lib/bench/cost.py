"""What a model costs per patch: GFLOPs (torch.utils.flop_counter) and CPU latency at batch 1 and 32.

Short timings (lib/bench/speed.py, fp32 eager, as benchmark.py's baseline configuration) for the rows of
kd.py's final table and of pareto.py; benchmark.py measures the same quantities at length.
"""
from __future__ import annotations

import torch
from torch import nn

from lib.bench.speed import inference_step, sync, timed_runs

LATENCY_BATCHES = (1, 32)
CPU = torch.device("cpu")


def count_flops(model: nn.Module, image_size: int, device=None, in_channels: int = 1) -> float:
    """FLOPs of one forward pass on one patch (a multiply-add counts 2), in eval mode; on the model's device
    unless `device` is given. The one FLOP count of benchmark.py, kd.py's table and pareto.py."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    device = device or next(model.parameters()).device
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(1, in_channels, image_size, image_size, device=device))
    return float(counter.get_total_flops())


def model_cost(model: nn.Module, image_size: int, batches=LATENCY_BATCHES, max_seconds: float = 3.0) -> dict:
    """{"gflops": per patch, "latency_ms_b1": ..., "latency_ms_b32": ...}: milliseconds per forward pass of a
    whole batch on the CPU in float32 eager: the fastest of a few runs (at most about `max_seconds` each),
    the least disturbed by other processes on a shared machine."""
    model = model.to(CPU).eval()
    cost = {"gflops": count_flops(model, image_size) / 1e9}
    for batch in batches:
        step = inference_step(model, "fp32 eager", batch, image_size, CPU)
        runs = timed_runs(step, warmup=1, repeats=5, max_seconds=max_seconds, sync=lambda: sync(CPU), min_runs=2,
                          slow_warmup_s=max_seconds / 4)
        cost[f"latency_ms_b{batch}"] = 1000 * min(runs)
    return cost
