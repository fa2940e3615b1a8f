"""What a training run writes beside its weights: the checkpoints' content, the training state RESUME needs,
and summary.json (lib/train/engine.py builds them per epoch, lib/train/checkpoint_saver.py writes them)."""
from __future__ import annotations

import random
import time
from dataclasses import asdict

import numpy as np
import torch

from lib.checkpoint import FORMAT, plain
from lib.runtime import library_versions, resolve_workers


def checkpoint(run, metrics: dict) -> dict:
    """best.pt's content (last.pt adds training_state)."""
    return {"format": FORMAT, "model": {"name": run.model_name, "args": plain(run.model_args)},
            "state_dict": run.model.state_dict(), "data": plain(run.data_info), "metrics": plain(metrics),
            "epoch": run.progress.epoch, "parameters": run.parameters, "constants": plain(run.constants),
            "baseline": plain(run.baseline)}


def training_state(run) -> dict:
    """What RESUME needs beyond the weights: optimizer, schedulers, scaler, counters, RNG states."""
    state = {"optimizer": run.optimization.optimizer.state_dict(), "plateau": run.plateau.state_dict(),
             "scaler": run.optimization.scaler.state_dict(), "progress": plain(asdict(run.progress)), "rng": rng_state()}
    if hasattr(run.objective, "parameters") and list(run.objective.parameters()):
        state["objective"] = run.objective.state_dict()  # kd.py's feature adapter
    return state


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"python": plain(random.getstate()), "torch": torch.get_rng_state(),
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def summary(run) -> dict:
    """summary.json: the best epoch's validation metrics and how the run was made."""
    p, c = run.progress, run.c
    best = next((row for row in p.history if row["epoch"] == p.best_epoch), {})
    result = {"model": run.model_name, "model_args": plain(run.model_args), "best_epoch": p.best_epoch,
              **{k: v for k, v in best.items() if k.startswith("val_")},
              "epochs_run": p.epoch, "parameters": run.parameters, "parameters_trained": run.parameters_trained,
              "encoder_weights": run.encoder_weights, "device": str(run.device), **run.speed,
              "world_size": run.world_size, "num_workers": resolve_workers(c["NUM_WORKERS"]),
              "data": {"root": str(c["DATA_ROOT"]), **plain(run.data_info), "train_patches": len(run.train_set),
                       "val_items": len(run.val_set),
                       "skipped": {"train": dict(run.train_set.skipped), "val": dict(run.val_set.skipped)}},
               "constants": plain(run.constants), "resumes": p.resumes, "baseline": plain(run.baseline),
               "wall_time_s": round(time.time() - run.started, 1),
              "versions": library_versions()}
    if run.extra_summary:
        result.update(plain(run.extra_summary()))
    return result
