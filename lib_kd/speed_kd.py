"""What distillation costs: the measurement behind `benchmark.py --kd`.

An epoch of distillation runs the student's training step and the teacher's forward pass on every
batch. `kd_epoch_cost` times, in one process and alternated so that the machine's state is shared,
an epoch of the student trained alone, an epoch of the teacher's forward pass alone and a distillation
epoch, each step through lib/train/step.py's `optimizer_step` with the engine's precision and memory format,
as kd.py trains.
"""
from __future__ import annotations

import statistics
import time

import torch

from lib.config import as_constants
from lib.data.factory import build_datasets
from lib.data.loader import make_loader
from lib.train.loss import supervised_loss
from lib.models.factory import build_model
from lib.runtime import autocast, resolve_device, seed_everything, speed_settings
from lib.bench.speed import sync
from lib.train.step import Optimization, SupervisedObjective, optimizer_step
from lib_kd.model_kd import TeacherFile, inherited_values, load_teacher, student_args
from lib_kd.objective import DistillationLoss, KDObjective
from lib_kd.training_kd import added_methods


def kd_epoch_cost(c: dict, rounds: int = 3) -> dict:
    """Seconds of one epoch over the training split of `c` (kd.py's constants, teacher's data settings
    filled in): the student trained alone, the teacher's forward pass alone, and a distillation epoch,
    alternated `rounds` times in one process (medians), with the engine's precision and memory format."""
    c = as_constants(c)
    teacher_file = TeacherFile.read(c["TEACHER_CHECKPOINT"])  # read once: data settings and model
    c = c.replace(**inherited_values(c, teacher_file))
    device = resolve_device(c["DEVICE"])
    settings = speed_settings(c, device)
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    seed_everything(c["SEED"])
    train_set, _ = build_datasets(c, log=lambda *a: None)
    loader = make_loader(train_set, c, True, device, torch.Generator().manual_seed(0))
    teacher = load_teacher(c["TEACHER_CHECKPOINT"], c, teacher_file)
    args = student_args(c)
    student = build_model(c["STUDENT"], args).to(device, memory_format=memory_format).train()
    supervised = supervised_loss(c).to(device)
    methods, features = added_methods(c, teacher, c["STUDENT"], args)  # KD_FEATURE, KD_CWD, ... as kd.py trains
    distillation = KDObjective(teacher, DistillationLoss(supervised, c["KD_TEMPERATURE"], c["KD_ALPHA"], c["KD_BETA"]),
                               methods=methods, features=features)
    distillation.to(device, memory_format)
    trained = [*student.parameters(), *distillation.parameters()]  # the feature adapter trains with the student
    optimization = Optimization.for_precision(torch.optim.AdamW(trained, lr=1e-5), settings["precision"], device)
    phases = {
        "student alone": lambda: train_epoch(student, SupervisedObjective(supervised), loader, optimization, memory_format),
        "teacher forward": lambda: forward_epoch(teacher.model, loader, settings["precision"], device, memory_format),
        "distillation": lambda: train_epoch(student, distillation, loader, optimization, memory_format),
    }
    seconds = alternated_seconds(phases, rounds, device)
    result = {name: statistics.median(times) for name, times in seconds.items()}
    result["ratio"] = result["distillation"] / (result["student alone"] + result["teacher forward"])
    return {**result, "samples": len(train_set), "batch_size": c["BATCH_SIZE"], "methods": methods.label(), **settings}


def train_epoch(model, objective, loader, optimization: Optimization, memory_format) -> None:
    device = next(model.parameters()).device
    for images, targets, _ in loader:
        optimizer_step(model, objective, images.to(device, memory_format=memory_format), targets.to(device),
                       optimization)


@torch.no_grad()
def forward_epoch(model, loader, precision: str, device: torch.device, memory_format) -> None:
    for images, _, _ in loader:
        with autocast(device, precision):
            model(images.to(device, memory_format=memory_format))


def alternated_seconds(phases: dict, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each phase in each of `rounds` rounds, after one untimed warm-up round."""
    for phase in phases.values():
        phase()
    seconds = {name: [] for name in phases}
    for _ in range(rounds):
        for name, phase in phases.items():
            started = time.perf_counter()
            phase()
            sync(device)
            seconds[name].append(time.perf_counter() - started)
    return seconds
