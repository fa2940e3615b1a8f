"""Knowledge distillation on top of the one training engine (lib/engine.py).

    L = KD_ALPHA * L_KD + KD_BETA * L_supervised
    L_KD = T^2 * mean over valid pixels of BCE-with-logits(student_logits / T, sigmoid(teacher_logits / T))

L_supervised is the engine's Focal Tversky loss; valid pixels are those whose target is not 255
(no-data). T^2 keeps the gradient of the soft term at the scale of T = 1 (Hinton et al. 2015).
`KDObjective` is the engine's loss plug-in: per batch one student forward (trained) and one teacher
forward (torch.no_grad, the engine's autocast, eval mode). The teacher is held by the objective, a
plain object, so the engine's model.train() never reaches it.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lib.checkpoint import CheckpointError
from lib.config import check_constants
from lib.errors import ConfigError
from lib.data import resolve_data_constants
from lib.dataset import IGNORE_INDEX
from lib.engine import evaluate, supervised_loss, train
from lib.model import build_model
from lib_kd.model_kd import (Teacher, full_args, inherit_teacher_data, load_teacher, student_args,
                             train_command, train_script)


# ---------------------------------------------------------------------------------------------- loss

def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean over `valid` pixels of BCE-with-logits(student / T, sigmoid(teacher / T)), without the T^2 factor.
    Pixels outside `valid` contribute exactly nothing (not even NaN), whatever their logits."""
    soft_targets = torch.sigmoid(teacher_logits.detach().float() / temperature)
    per_pixel = F.binary_cross_entropy_with_logits(student_logits.float() / temperature, soft_targets, reduction="none")
    per_pixel = torch.where(valid, per_pixel, torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device))
    return per_pixel.sum() / valid.sum().clamp_min(1)


class DistillationLoss(nn.Module):
    """(L, L_KD, L_supervised) from student logits, teacher logits and targets (1 water, 0 not, 255 no-data).

    With alpha = 0 the KD term is still computed for the history (without gradient) but is not added:
    L is then beta * L_supervised exactly (the engine's loss, bit for bit, when beta = 1)."""

    def __init__(self, supervised: nn.Module, temperature: float = 4.0, alpha: float = 0.5, beta: float = 0.5,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"KD_TEMPERATURE must be > 0, got {temperature}")
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise ValueError(f"KD_ALPHA and KD_BETA must be >= 0 and not both 0, got {alpha} and {beta}")
        self.supervised = supervised
        self.temperature, self.alpha, self.beta, self.ignore_index = float(temperature), float(alpha), float(beta), ignore_index

    def kd_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return t * t * soft_bce(student_logits, teacher_logits, targets != self.ignore_index, t)

    def forward(self, student_logits, teacher_logits, targets):
        sup = self.supervised(student_logits, targets)
        if self.alpha == 0:
            with torch.no_grad():
                kd = self.kd_term(student_logits, teacher_logits, targets)
            return self.beta * sup, kd, sup
        kd = self.kd_term(student_logits, teacher_logits, targets)
        return self.alpha * kd + self.beta * sup, kd, sup


# ----------------------------------------------------------------------------------------- objective

class KDObjective:
    """The engine's loss plug-in: `objective(student, images, targets) -> (loss, {"kd_loss", "sup_loss"})`."""
    columns = ("kd_loss", "sup_loss")

    def __init__(self, teacher: Teacher | nn.Module, loss: DistillationLoss, bands=("VV", "VH"), progress: bool = False):
        self.teacher_info = teacher if isinstance(teacher, Teacher) else None
        self.teacher = teacher.model if isinstance(teacher, Teacher) else teacher
        self.loss = loss
        self.bands, self.progress = tuple(bands), progress
        self.device = None
        self.teacher_val: dict | None = None
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def to(self, device: torch.device, memory_format=torch.channels_last) -> None:
        if self.device != device:
            # the student's memory format (CHANNELS_LAST): the teacher's convolutions, MobileNetV2's
            # depthwise ones above all, run 1.5-3x faster in channels_last; the weights' values do not change
            self.teacher.to(device, memory_format=memory_format)
            self.loss.to(device)
            self.device = device

    def start(self, device, val_loader, precision: str, memory_format=torch.channels_last) -> None:
        """Called once by the engine before the first epoch: move the teacher to the student's device and
        score it on the very validation loader (and precision) the student is scored on."""
        self.to(device, memory_format)
        val_loss, metrics = evaluate(self.teacher, val_loader, self.loss.supervised, self.bands, device, precision,
                                     progress=self.progress)
        self.teacher_val = {"loss": val_loss, **metrics}
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            ious = " ".join(f"{b} {metrics[f'iou_{b}']:.3f}" for b in self.bands)
            print(f"teacher on val: IoU {ious} mean {metrics['iou']:.3f} (loss {val_loss:.4f})")

    def __call__(self, model, images, targets):
        self.to(images.device)
        if self.teacher.training:  # nothing in the engine reaches the teacher; keep it so whatever happens
            self.teacher.eval()
        logits = model(images)
        with torch.no_grad():  # inside the engine's autocast, like the student's forward
            teacher_logits = self.teacher(images)
        loss, kd, sup = self.loss(logits, teacher_logits, targets)
        return loss, {"kd_loss": kd.detach(), "sup_loss": sup.detach()}

    def summary(self) -> dict:
        """The engine's extra_summary hook: what summary.json records of the teacher."""
        info = self.teacher_info.info() if self.teacher_info else {}
        return {**info, "teacher_val": self.teacher_val}


# ------------------------------------------------------------------------------------------------ run

def resolve_output_dir(c: dict) -> str:
    return str(c.get("OUTPUT_DIR") or f"runs/kd_{c['STUDENT'].lower()}")


def distill(constants: dict) -> dict:
    """Train c["STUDENT"] against the teacher of c["TEACHER_CHECKPOINT"]; returns the engine's summary."""
    c = {**constants, "OUTPUT_DIR": resolve_output_dir(constants)}
    # a teacher file that cannot be read is a CheckpointError; the inherited values are checked as well
    # (PATCH must divide the teacher's IMAGE_SIZE)
    c = check_constants(inherit_teacher_data(c))
    name, args = c["STUDENT"], student_args(c)
    try:
        build_model(name, args)  # fail before the teacher and the data are loaded
    except (TypeError, ValueError) as error:
        raise ConfigError(f"STUDENT={name!r} cannot be built with {args} (from STUDENT_ARGS and the student "
                          f"constants): {error}") from None
    try:
        loss = DistillationLoss(supervised_loss(c), c["KD_TEMPERATURE"], c["KD_ALPHA"], c["KD_BETA"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    teacher = load_teacher(c["TEACHER_CHECKPOINT"], c)  # TeacherError / CheckpointError name the file
    check_resumed_teacher(c, teacher)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        print(f"teacher {teacher.name} from {teacher.path}: {teacher.parameters['held']:,} parameters held, "
              f"{teacher.parameters['used']:,} used; T={loss.temperature:g} alpha={loss.alpha:g} beta={loss.beta:g}")
    resolved = resolve_data_constants(c)  # what the engine will use (defaults, KOMPSAT-5 bands)
    objective = KDObjective(teacher, loss, bands=resolved["VAL_BANDS"], progress=bool(resolved["PROGRESS"]) and is_main)
    summary = train(c, name, args, objective=objective, extra_summary=objective.summary)
    if is_main:
        print(comparison_table(resolved, summary, teacher, objective.teacher_val or {}))
    return summary


def check_resumed_teacher(c: dict, teacher: Teacher) -> None:
    """RESUME=1 with another teacher file than the run started with would mix two distillations."""
    previous = Path(c["OUTPUT_DIR"]) / "summary.json"
    if not c.get("RESUME") or not previous.is_file():
        return
    recorded = json.loads(previous.read_text()).get("teacher_sha256")
    if recorded and recorded != teacher.sha256:
        raise CheckpointError(f"RESUME=1 but {teacher.path} is not the teacher this run started with "
                         f"(sha256 {teacher.sha256[:12]}... vs {recorded[:12]}... in {previous})")


# --------------------------------------------------------------------------------------- comparison

def _same_path(a, b) -> bool:
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def find_scratch_run(c: dict, name: str, args: dict, search: list[Path] | None = None) -> Path | None:
    """The newest summary.json of a plain (not distilled) run of the same student on the same data for the
    same EPOCHS, under runs/ and beside OUTPUT_DIR."""
    output_dir = Path(c["OUTPUT_DIR"])
    folders = search if search is not None else list(dict.fromkeys([Path("runs"), output_dir.parent]))
    wanted = full_args(name, args)
    found = []
    for folder in folders:
        for path in Path(folder).glob("*/summary.json"):
            if _same_path(path.parent, output_dir):
                continue
            try:
                run = json.loads(path.read_text())
                data = run["data"]
                matches = (run.get("teacher_checkpoint") is None and run["model"] == name
                           and full_args(name, run["model_args"]) == wanted
                           and _same_path(data["root"], c["DATA_ROOT"]) and data.get("format") == c["DATA_FORMAT"]
                           and data["train_bands"] == list(c["TRAIN_BANDS"]) and data["val_bands"] == list(c["VAL_BANDS"])
                           and data["image_size"] == int(c["IMAGE_SIZE"]) and run["constants"]["EPOCHS"] == c["EPOCHS"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if matches:
                found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def mean_epoch_time(run_dir: Path) -> float | None:
    try:
        with open(run_dir / "history.csv", newline="") as handle:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return None
    return sum(times) / len(times) if times else None


def comparison_table(c: dict, summary: dict, teacher: Teacher, teacher_val: dict) -> str:
    """Teacher, distilled student and (when such a run exists) the same student trained alone: per-band
    validation IoU, parameters held and used, and the used-parameter ratio to the teacher."""
    bands = list(c["VAL_BANDS"])
    name, args = summary["model"], summary["model_args"]
    scratch_path = find_scratch_run(c, name, args)
    scratch = json.loads(scratch_path.read_text()) if scratch_path else None
    t_used = teacher.parameters["used"]

    header = ["run", *[f"IoU {b}" for b in bands], "IoU mean", "params held", "params used", "used/teacher", "s/epoch"]
    rows = []

    def row(label, ious, params, seconds):
        seconds_text = f"{seconds:.1f}" if seconds is not None else "-"
        rows.append([label, *[f"{v:.3f}" if isinstance(v, (int, float)) else "-" for v in ious],
                     f"{params['held']:,}", f"{params['used']:,}", f"{params['used'] / max(t_used, 1):.2f}x", seconds_text])

    row(f"teacher {teacher.name}", [teacher_val.get(f"iou_{b}") for b in bands] + [teacher_val.get("iou")],
        teacher.parameters, mean_epoch_time(teacher.path.parent))
    row(f"student {name} distilled", [summary.get(f"val_iou_{b}") for b in bands] + [summary.get("val_iou")],
        summary["parameters"], mean_epoch_time(Path(c["OUTPUT_DIR"])))
    if scratch:
        row(f"student {name} alone", [scratch.get(f"val_iou_{b}") for b in bands] + [scratch.get("val_iou")],
            scratch["parameters"], mean_epoch_time(scratch_path.parent))

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)  # noqa: E731
                                  for i, (cell, w) in enumerate(zip(cells, widths)))
    lines = [f"Distillation: {c['EPOCHS']} epoch(s) on {c['DATA_ROOT']}; validation IoU at each run's best epoch",
             fmt(header), *[fmt(r) for r in rows]]
    if scratch:
        lines.append(f"student alone: {scratch_path}")
    else:
        command = train_command(train_script(name), c, args, keys=("EPOCHS",))
        lines.append(f"student alone: not found: train it with `{command}` and run kd.py again for the comparison")
    lines.append(f"used/teacher: parameters used in the forward pass, student / teacher; the teacher holds "
                 f"{teacher.parameters['held']:,} but its forward pass uses {t_used:,}, so the ratio counts used ones")
    return "\n".join(lines)
