"""Checkpoints: plain-typed dicts written atomically and read with `weights_only=True`.

A checkpoint rebuilds its model with no script: `model, ckpt = load_model(path)`. It holds
    format, model {name, args}, state_dict, data {format, train_bands, val_bands, normalization,
    image_size, ...}, metrics, epoch, parameters, constants
and `last.pt` adds `training_state` (optimizer, scheduler, scaler, counters, RNG states) for RESUME.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
from torch import nn

from lib.errors import CheckpointError, OutputError, os_error_text
from lib.models.factory import build_model

FORMAT = "sar-kd-flood/1"




def plain(value: Any) -> Any:
    """JSON- and weights_only-safe copy: numpy scalars/arrays and tuples become Python types."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    return repr(value)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through a temporary file in its folder, flushed to disk and renamed over it, so a crash or
    a full disk mid-write leaves the previous file intact. A failed write (an OSError: disk full, read-only
    folder) is one OutputError naming the file, the OS error and what is left."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OutputError:
        raise
    except (OSError, RuntimeError) as error:
        failure = write_failure(error)
        if failure is None:
            raise
        kept = f"the previous {path.name} is kept unchanged" if existed else f"no {path.name} was written"
        raise OutputError(f"{path}: could not be written ({failure}); {kept}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_failure(error: BaseException) -> str | None:
    """What made a write fail, or None when `error` is not a failed write. torch's zip writer turns the
    OSError of a full disk into a RuntimeError ("unexpected pos ..."), keeping the OSError as its context."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return os_error_text(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, RuntimeError) and ("PytorchStreamWriter" in str(error) or "file write failed" in str(error)):
        return f"torch could not write the file: {str(error).splitlines()[0]}"
    return None


def same_file(a: Path | str, b: Path | str) -> bool:
    """True when two paths name one file, also through links or other spellings (an output that is an input)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, read 1 MiB at a time (a checkpoint can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(checkpoint: dict, path: Path | str) -> None:
    """torch.save through atomic_write: a crash mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def read_checkpoint(path: Path | str) -> dict:
    """torch.load with weights_only=True: a checkpoint that would run code on load is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a file written by torch.save)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain "
                              f"Python types (a checkpoint from an unknown source could run code). {detail}") from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (missing or wrong 'format' key)")
    return checkpoint


def check_fits(own: dict, state_dict: dict, source: str) -> None:
    """Refuse weights whose keys or shapes differ from the model's state dict `own`, naming them."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                        for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    problems = [f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatch (checkpoint vs model)", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model; " + "; ".join(problems))


def load_state(model: nn.Module, state_dict: dict, source: str) -> None:
    """load_state_dict with a message that names the keys that do not fit."""
    check_fits(model.state_dict(), state_dict, source)
    model.load_state_dict(state_dict)


# what building a model from crafted arguments raises (negative widths, an empty list, a wrong type, ...)
BUILD_ERRORS = (KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError, ZeroDivisionError,
                AssertionError, MemoryError)


def check_data_settings(path: Path | str, data) -> None:
    """A normalization range that is not two different finite numbers would map nothing or divide by zero:
    refused, naming the band."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: its 'data' settings are not a dict")
    table = data.get("normalization") or {}
    if not isinstance(table, dict):
        raise CheckpointError(f"{path}: its normalization table is not a dict of band -> [low, high]")
    for band, bounds in table.items():
        ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
        if not ok or bounds[0] == bounds[1]:  # reversed is allowed: NDWI's [1, -1] maps water dark
            raise CheckpointError(f"{path}: normalization range of band {band} is {bounds!r}; expected two different "
                                  f"finite numbers (the file is damaged or was not written by training)")


def rebuild(path: Path | str, spec) -> nn.Module:
    """The checkpoint's model built on the meta device (shapes, no memory), for checking against the weights
    first: arguments out of range (negative, huge) are one CheckpointError, not a crash or a huge allocation."""
    if not isinstance(spec, dict) or not isinstance(spec.get("args") or {}, dict):
        raise CheckpointError(f"{path}: its 'model' entry is not {{name, args}}")
    name, args = spec.get("name"), spec.get("args") or {}
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Initializing zero-element tensors is a no-op" of a zero width
            skeleton = build_model(name, args)
    except BUILD_ERRORS as error:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from its arguments {args}: "
                              f"{type(error).__name__}: {error}") from None
    return skeleton


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint from the checkpoint alone; returns (model in eval mode, checkpoint)."""
    checkpoint = read_checkpoint(path)
    return model_from_checkpoint(checkpoint, path).to(device), checkpoint


def model_from_checkpoint(checkpoint: dict, path: Path | str) -> nn.Module:
    """The model of a checkpoint already read (read_checkpoint), in eval mode on the CPU; `path` names it.
    Its data settings and model arguments are checked first (a model of the weights' size, nothing huge)."""
    check_data_settings(path, checkpoint.get("data", {}))
    spec = checkpoint.get("model")
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: holds no state_dict of weights")
    check_fits(rebuild(path, spec).state_dict(), state_dict, str(path))
    model = build_model(spec["name"], spec.get("args"))  # the arguments fit the weights: a model of their size
    load_state(model, state_dict, str(path))
    return model.eval()
