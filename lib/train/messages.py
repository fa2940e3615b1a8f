"""Messages of a run that stops early, which say only what is true: what is kept (or that nothing was
written), and for a non-finite loss what was non-finite and a cause that fits what happened (a loss that
is non-finite before any weight update is not the learning rate's fault; one that was finite and then
diverged may well be)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from lib.errors import TrainingError


def non_finite_loss(epoch: int, step: int | None, values: torch.Tensor, columns, first_step_of_run: bool,
                    epochs_kept: int, output_dir: Path) -> TrainingError:
    """`values`: [loss, *columns] of the bad step (or their sums over the epoch when `step` is None);
    `epochs_kept`: the epochs completed, so written to last.pt (0: none)."""
    names = ("loss", *columns)
    bad = [f"{name} {value}" for name, value in zip(names, values.tolist()) if not math.isfinite(value)]
    where = f"step {step}" if step is not None else "one of its steps"
    if epochs_kept:
        kept = f"{output_dir / 'last.pt'} (epoch {epochs_kept}) and best.pt are kept"
    else:
        kept = "no checkpoint was written (no epoch completed)"
    if first_step_of_run:
        cause = ("it was non-finite at the run's first step, before any weight update, so not because of the "
                 "learning rate: check the loss constants (FTL_*, and KD_* for kd.py) and the input data")
    else:
        cause = "try a lower LR (or more WARMUP_EPOCHS), or check the input data for extreme values"
    return TrainingError(f"non-finite training loss at epoch {epoch}, {where} ({', '.join(bad) or 'loss'}); "
                         f"stopping. {kept[0].upper()}{kept[1:]}. {cause[0].upper()}{cause[1:]}")


def interrupted(output_dir: Path, epochs_kept: int) -> str:
    """The line a Ctrl-C prints; `epochs_kept`: the epochs completed, so written to last.pt."""
    if epochs_kept:
        return f"interrupted: {output_dir / 'last.pt'} holds epoch {epochs_kept}; continue with RESUME=1"
    return "interrupted in the first epoch: no checkpoint was written; start again (without RESUME)"
