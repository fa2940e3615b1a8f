"""RESUME=1 continues a run only where it is still the same run.

last.pt records the constants, the model and the data settings its run was trained with; `check_resume`
compares them with the resuming run's own:

* a change that alters what the run means is refused with one line listing each difference: any constant
  not named in MAY_CHANGE or HOW_IT_RUNS (model arguments, data root, format and list files, bands, image
  size, loss, batch size, learning rate, seed, ... and any constant added later), the model and its
  arguments, the data settings the checkpoint records (e.g. a band's normalization range changed in
  lib/data/bands.py), and the number of torchrun processes (BATCH_SIZE is per process);
* EPOCHS and PATIENCE may change (to extend a run), and so may how it runs (device, precision, speed
  switches, workers, preload, progress bars); the changes are logged and kept in summary.json `resumes`;
* a run that has nothing left to do (EPOCHS reached or passed, or early-stopped under this PATIENCE) is
  refused, saying what to raise;
* a file without training state (a best.pt copied to last.pt) is named as such, with what resume needs.

A resumed run also continues the random streams (python, numpy, torch, CUDA) where last.pt left them
(`restore_rng_state`); `rng_state` in lib/train/records.py writes them.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from lib.checkpoint import plain
from lib.config import with_defaults
from lib.data.factory import RECORDED_ONLY
from lib.errors import CheckpointError, ConfigError

MAY_CHANGE = ("EPOCHS", "PATIENCE")
# how a run is executed, not what it computes
HOW_IT_RUNS = ("DEVICE", "PRECISION", "CHANNELS_LAST", "COMPILE", "NUM_WORKERS", "PRELOAD", "PROGRESS")
# not compared: the folder and the switch themselves; kd.py compares the teacher file by its sha256
NOT_COMPARED = ("OUTPUT_DIR", "RESUME", "TEACHER_CHECKPOINT")
NOT_SET = object()  # a constant one of the two runs does not have


def text_of(value) -> str:
    if value is NOT_SET:
        return "(not set)"
    value = plain(value)
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(empty)"
    return str(value)


def same(a, b) -> bool:
    """Equal as plain values; two strings naming the same path (02_kfold, ./02_kfold) are the same."""
    if a is NOT_SET or b is NOT_SET:
        return a is b
    a, b = plain(a), plain(b)
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b)


def changed_constants(recorded: dict, current: dict, skip=()) -> dict[str, list]:
    """{name: [recorded, current]} of every constant that differs (both completed with the defaults)."""
    recorded, current = with_defaults(recorded), with_defaults(plain(current))
    names = dict.fromkeys([*recorded, *current])
    return {name: [recorded.get(name, NOT_SET), current.get(name, NOT_SET)] for name in names
            if name not in skip and not same(recorded.get(name, NOT_SET), current.get(name, NOT_SET))}


def describe(changes: dict[str, list]) -> str:
    return "; ".join(f"{name} {text_of(before)} -> {text_of(after)}" for name, (before, after) in changes.items())


def no_training_state(path: Path, checkpoint: dict) -> str:
    model = checkpoint.get("model", {}).get("name", "a model")
    return (f"{path}: holds no training state: it is a model checkpoint ({model} weights of epoch "
            f"{checkpoint.get('epoch', '?')}, like best.pt), not the last.pt a run writes after every epoch. "
            f"RESUME=1 needs that file's optimizer, scheduler and counters (its 'training_state'): put the run's own "
            f"last.pt back, or start a new run without RESUME")


def meaning_differences(checkpoint: dict, constants: dict, model_name: str, model_args: dict, data_info: dict,
                        world_size: int, output_dir: Path) -> dict[str, list]:
    """What differs between the run recorded in `checkpoint` and this one, beyond what may change."""
    differences = {}
    if isinstance(checkpoint.get("constants"), dict):
        differences = changed_constants(checkpoint["constants"], constants, skip=MAY_CHANGE + HOW_IT_RUNS + NOT_COMPARED)
    if differences:  # the constants explain it; the model and data settings follow from them
        return differences
    model = checkpoint.get("model", {})
    if model.get("name") != model_name:
        differences["model"] = [model.get("name"), model_name]
    elif not same(model.get("args", {}), model_args):
        differences["model arguments"] = [model.get("args"), plain(model_args)]
    for key, value in plain(data_info).items():
        if key in RECORDED_ONLY:  # the table it names is compared
            continue
        if not same(checkpoint.get("data", {}).get(key, NOT_SET), value):
            differences[f"data {key}"] = [checkpoint.get("data", {}).get(key, NOT_SET), value]
    recorded_world = recorded_world_size(output_dir)
    if recorded_world is not None and recorded_world != world_size:
        differences["torchrun processes (BATCH_SIZE is per process)"] = [recorded_world, world_size]
    return differences


def recorded_world_size(output_dir: Path) -> int | None:
    try:
        return int(json.loads((output_dir / "summary.json").read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_left_to_do(path: Path, progress: dict, c: dict) -> None:
    epoch, stale = int(progress.get("epoch", 0)), int(progress.get("stale_epochs", 0))
    if epoch > c["EPOCHS"]:
        raise ConfigError(f"RESUME=1 with EPOCHS={c['EPOCHS']}, but {path} already holds {epoch} epochs; "
                          f"set EPOCHS above {epoch} to train on")
    if epoch == c["EPOCHS"]:
        raise ConfigError(f"RESUME=1 but the run is complete: {path} holds epoch {epoch} of EPOCHS={c['EPOCHS']}; "
                          f"raise EPOCHS to train on")
    if stale >= c["PATIENCE"]:
        raise ConfigError(f"RESUME=1 but the run stopped early: {path} holds {stale} epochs without improvement "
                          f"(PATIENCE={c['PATIENCE']}); raise PATIENCE above {stale} to train on")


def check_resume(checkpoint: dict, path: Path | str, constants: dict, model_name: str, model_args: dict,
                 data_info: dict, world_size: int = 1) -> dict[str, list]:
    """Raise unless `checkpoint` (read from last.pt at `path`) can be resumed by this run; return the
    changes resume allows ({name: [before, after]}, e.g. {"EPOCHS": [3, 5]}) for the record."""
    path = Path(path)
    if not isinstance(checkpoint.get("training_state"), dict):
        raise CheckpointError(no_training_state(path, checkpoint))
    differences = meaning_differences(checkpoint, constants, model_name, model_args, data_info, world_size, path.parent)
    if differences:
        raise ConfigError(f"RESUME=1 but {path} was trained with other settings: {describe(differences)}. "
                          f"Resume may change only {', '.join(MAY_CHANGE)} (and how the run is executed: "
                          f"{', '.join(HOW_IT_RUNS)}); for anything else start a new run in another OUTPUT_DIR")
    c = with_defaults(constants)
    check_left_to_do(path, checkpoint["training_state"].get("progress", {}), c)
    return changed_constants(checkpoint.get("constants", {}), constants, skip=("RESUME", "OUTPUT_DIR")) \
        if isinstance(checkpoint.get("constants"), dict) else {}


def record_resume(resumes: list[dict], after_epoch: int, changes: dict[str, list]) -> list[dict]:
    """The `resumes` list of the run (summary.json) with this resume added, when it changed anything."""
    if not changes:
        return list(resumes)
    return [*resumes, {"after_epoch": after_epoch, "changed": {name: [text_of(before), text_of(after)]
                                                                for name, (before, after) in changes.items()}}]


def restore_rng_state(rng: dict | None) -> None:
    """Set the python, numpy, torch and CUDA generators to the states last.pt recorded (the engine's
    `rng_state`), so the resumed run draws what the uninterrupted one would have. A checkpoint from before
    RNG states were saved has none: nothing to restore. CUDA states are restored where as many devices exist."""
    if not rng:
        return
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
