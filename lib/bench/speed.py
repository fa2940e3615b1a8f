"""What the hardware can do and what a model gets of it: the measurements behind `benchmark.py --train`.

Every model is timed in float32 eager (the published behaviour) and in the optimized configurations the
engine can run (`CONFIGS`: bf16 autocast where the CPU or GPU has it, channels_last, torch.compile), in
the same process, so the ratios are honest. Training is one full step (forward, Focal Tversky loss,
backward, AdamW step over the used parameters) through lib/train/step.py's `optimizer_step`, the function
lib/train/engine.py trains with. The distillation cost (`benchmark.py --kd`) is measured in lib_kd/speed_kd.py.
"""
from __future__ import annotations

import re
import statistics
import time

import torch
from torch import nn

from lib.train.loss import FocalTverskyLoss
from lib.models.factory import used_parameters
from lib.runtime import autocast
from lib.train.step import Optimization, SupervisedObjective, optimizer_step

# name -> (precision, channels_last, compile); "fp32 eager" is the baseline of every ratio
CONFIGS = {
    "fp32 eager": ("fp32", False, False),
    "bf16 + channels_last": ("bf16", True, False),
    "bf16 + channels_last + compile": ("bf16", True, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(step, warmup: int, repeats: int, max_seconds: float, sync=lambda: None, min_runs: int = 3,
               slow_warmup_s: float | None = None) -> list[float]:
    """Seconds of up to `repeats` timed calls of `step` after `warmup` untimed ones; stops early once it has
    `min_runs` and has spent `max_seconds`. With `slow_warmup_s`, a warm-up call slower than that ends
    the warm-up (it has compiled and allocated what the step needs)."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        step()
        sync()
        if slow_warmup_s is not None and time.perf_counter() - t0 > slow_warmup_s:
            break
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and not (len(times) >= min(min_runs, repeats)
                                        and time.perf_counter() - started > max_seconds):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def timed(step, device: torch.device, warmup: int = 2, repeats: int = 5, max_seconds: float = 30.0) -> float:
    """Median seconds of `step()` over up to `repeats` runs after `warmup` untimed ones (at least one timed
    run; stops early once `max_seconds` are spent; one warm-up only where it took over max_seconds / 4)."""
    return statistics.median(timed_runs(step, warmup, repeats, max_seconds, lambda: sync(device), min_runs=1,
                                        slow_warmup_s=max_seconds / 4))


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured GFLOP/s of an n x n matrix product in `dtype`: the practical ceiling of this machine."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), device, seconds) / 1e9


def conv_peak_gflops(dtype: torch.dtype, device: torch.device, channels: int = 128, side: int = 64,
                     seconds: float = 2.0) -> float:
    """Measured GFLOP/s of a 3x3 convolution (channels_last, batch 4) in `dtype`: the convolution kernels
    (oneDNN on the CPU) are not the matrix product's (MKL), and on some CPUs they run faster."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(4, channels, side, side, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return 2 * 4 * channels**2 * 9 * side**2 / _best_seconds(lambda: conv(x), device, seconds) / 1e9


def _best_seconds(step, device: torch.device, seconds: float) -> float:
    runs = max(3, int(seconds / max(timed(step, device, warmup=1, repeats=1), 1e-6)))
    return timed(step, device, warmup=1, repeats=runs)


# operators whose time bf16 can shrink: matrix products and convolutions, forward and backward (not
# upsample_bilinear2d, whose name also holds "linear", nor the memory-bound dot of the loss)
ACCELERATED_OPS = re.compile(r"convolution|::(mm|addmm|bmm|baddbmm|matmul|linear|mkldnn_linear)$")


def accelerated_share(step, runs: int = 2) -> float:
    """Share of `step`'s operator time (torch.profiler, self CPU time) spent in matrix products and
    convolutions, the only operators that bf16 makes several times faster. Where it is small, the step
    is bound by memory traffic and per-operator overhead (normalization, activations, the loss,
    upsampling, the optimizer), which the number format barely changes."""
    from torch.profiler import ProfilerActivity, profile
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if ACCELERATED_OPS.search(e.key)) / total if total else 0.0


def activation_bytes(model: nn.Module, image_size: int, device: torch.device) -> int:
    """Bytes (float32) of every leaf module's output in one forward pass on one patch: what a training
    step has to keep for the backward pass, roughly, and what an inference pass streams through memory."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * 4

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def prepare(model: nn.Module, config: str, device: torch.device):
    """(callable model, memory format, precision) of `model` in configuration `config`."""
    precision, channels_last, compiled = CONFIGS[config]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    return (torch.compile(model) if compiled else model), memory_format, precision


def inference_step(model: nn.Module, config: str, batch: int, image_size: int, device: torch.device):
    """One forward pass of `model` (eval mode, no autograd) on `batch` patches in configuration `config`."""
    net, memory_format, precision = prepare(model.eval(), config, device)
    images = torch.rand(batch, 1, image_size, image_size, device=device).contiguous(memory_format=memory_format)

    def step():
        with torch.inference_mode(), autocast(device, precision):
            net(images)

    return step


def inference_rate(model: nn.Module, config: str, batch: int, image_size: int, device: torch.device,
                   **timing) -> float:
    """Images per second of `model` (eval mode, no autograd) at `batch` in configuration `config`."""
    return batch / timed(inference_step(model, config, batch, image_size, device), device, **timing)


def train_step(model: nn.Module, config: str, batch: int, image_size: int, device: torch.device):
    """One training step as the engine runs it (lib.train.step.optimizer_step): forward, Focal Tversky loss,
    backward, AdamW step over the used parameters."""
    model.train()
    trainable = used_parameters(model, image_size)
    net, memory_format, precision = prepare(model, config, device)
    optimization = Optimization.for_precision(torch.optim.AdamW(trainable, lr=1e-5), precision, device)
    objective = SupervisedObjective(FocalTverskyLoss())
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, image_size, image_size, generator=generator).to(device, memory_format=memory_format)
    targets = (torch.rand(batch, 1, image_size, image_size, generator=generator) < 0.2).to(torch.uint8).to(device)
    return lambda: optimizer_step(net, objective, images, targets, optimization)


def train_rate(model: nn.Module, config: str, batch: int, image_size: int, device: torch.device,
               **timing) -> float:
    """Training samples per second: forward, Focal Tversky loss, backward and AdamW step, as the engine runs them."""
    return batch / timed(train_step(model, config, batch, image_size, device), device, **timing)


def int8_dynamic(model: nn.Module) -> nn.Module | None:
    """Dynamic int8 quantization of the Linear layers (CPU), or None where the model has none or the
    build lacks it. Only the token and channel MLPs of PSPMixer qualify among our models."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return None
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
            return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
    except (AttributeError, RuntimeError):
        return None


def data_pipeline_rate(dataset, batch: int, workers: int = 0, samples: int = 2048) -> float:
    """Samples per second of loading + augmenting alone: the engine's DataLoader over `dataset`, no model."""
    from torch.utils.data import DataLoader

    from lib.data.augmentation import seed_worker
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        worker_init_fn=seed_worker, persistent_workers=workers > 0)
    for _ in zip(range(2), loader):  # warm-up: workers started, caches touched
        pass
    done, started = 0, time.perf_counter()
    while done < samples:
        for images, _, _ in loader:
            done += len(images)
            if done >= samples:
                break
    return done / (time.perf_counter() - started)
