"""Device, precision and the other speed settings, worker count, seeding and library versions."""
from __future__ import annotations

import ctypes
import os
import platform
import random
import signal
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.distributed as dist

from lib.config import check_value
from lib.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """DEVICE as a torch.device; "auto": CUDA where available, else the CPU (the engine adds the DDP local rank)."""
    if name in (None, ""):
        name = "auto"
    name = check_value("DEVICE", name)  # a device this machine lacks is a ConfigError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def distributed_context(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun, joins the process group (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, resolve_device(device_name)
    device = resolve_device(device_name)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # stop exactly where a Ctrl-C would: the same message, clean-up and exit status


@contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (`kill`, a scheduler's time limit, a container stop) handled as Ctrl-C for the block: one line,
    temporary files removed, lock released, instead of dying mid-write. Only from the main thread (where
    Python delivers signals) and only where SIGTERM still has its default action."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(requested: int | str) -> int:
    """NUM_WORKERS, never above the machine's cores; "auto" keeps one core for the training step."""
    cores = cpu_cores()
    requested = "auto" if requested is None else check_value("NUM_WORKERS", requested)
    if requested == "auto":
        return min(4, max(0, cores - 1)) if cores > 2 else 0
    return min(requested, cores)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16). Elsewhere oneDNN
    emulates bf16, which is slower than float32, so "auto" keeps float32 there."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(requested: str, device: torch.device) -> str:
    """"fp32", "fp16" or "bf16". "auto": mixed precision on CUDA (bf16 where supported, else fp16), bf16
    autocast on a CPU with native bf16 (AVX512-BF16/AMX: about 2x faster training here), float32 elsewhere."""
    requested = "auto" if requested is None else check_value("PRECISION", requested)
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("PRECISION='fp16' needs CUDA; use bf16 or fp32 on CPU")
    return requested


def resolve_switch(name: str, requested, auto: bool) -> bool:
    """A speed switch constant (CHANNELS_LAST, COMPILE): "auto" -> `auto`; else its boolean. The value is
    typed by lib.config (text from a caller that did not load constants is checked there too)."""
    requested = "auto" if requested is None else check_value(name, requested)
    return auto if requested == "auto" else requested


def speed_settings(c: dict, device: torch.device) -> dict:
    """The resolved speed constants of a run: precision, channels_last, compile (recorded in summary.json).

    channels_last "auto": on. Convolutions run 1.3-2.5x faster in it with oneDNN on the CPU and with
    cuDNN's tensor-core kernels on CUDA; models without convolutions are not slowed.
    compile "auto": off. torch.compile pays on long runs (MLP_256 trains 2x faster again here) but costs
    15-60 s of compilation per model and shape on 2 CPU cores, more than a short run saves."""
    return {"precision": resolve_precision(c.get("PRECISION", "auto"), device),
            "channels_last": resolve_switch("CHANNELS_LAST", c.get("CHANNELS_LAST", "auto"), True),
            "compile": resolve_switch("COMPILE", c.get("COMPILE", "auto"), False)}


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse instead of handing large blocks back to the OS.

    By default every activation above the mmap threshold (at most 32 MiB) is mmap-ed, and freed heap
    beyond the trim threshold is returned to the OS, so each forward pass page-faults its activations in
    again: on CPU that makes batches of 256 px tiles 2-4x slower, and training steps up to 4x slower (the
    engine and predict.py call it on CPU). The process then keeps its peak heap (one step's activations).
    Process-wide; a no-op (False) where glibc is absent."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_ok = libc.mallopt(m_mmap_threshold, 1 << 30) or libc.mallopt(m_mmap_threshold, 32 << 20)
    return bool(mmap_ok) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def library_versions() -> dict[str, str]:
    import albumentations
    import segmentation_models_pytorch
    import timm
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
            "albumentations": albumentations.__version__, "timm": timm.__version__}
