"""Device, precision, worker count, seeding and library versions."""
from __future__ import annotations

import os
import platform
import random
from contextlib import nullcontext

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: DEVICE={name!r} but CUDA is not available; use DEVICE=cpu or auto")
    return device


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(requested: int | str) -> int:
    """NUM_WORKERS, never above the machine's cores; "auto" keeps one core for the training step."""
    cores = cpu_cores()
    if requested in ("auto", None):
        return min(4, max(0, cores - 1)) if cores > 2 else 0
    return max(0, min(int(requested), cores))


def resolve_precision(requested: str, device: torch.device) -> str:
    """"fp32", "fp16" or "bf16". "auto": mixed precision on CUDA (bf16 where supported), float32 on CPU."""
    if requested in ("auto", None):
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if requested not in ("fp32", "fp16", "bf16"):
        raise SystemExit(f"error: PRECISION={requested!r}; expected auto, fp32, fp16 or bf16")
    if requested == "fp16" and device.type != "cuda":
        raise SystemExit("error: PRECISION=fp16 needs CUDA; use bf16 or fp32 on CPU")
    return requested


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
