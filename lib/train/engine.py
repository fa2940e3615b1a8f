"""The one training loop, used by every train script and by kd.py.

    summary = train(constants, "PSPMixer", {"patch": 16, "hidden": 48, "depth": 3})

`constants` are the script's UPPER_CASE constants (after command-line overrides). The loss is a
plug-in: `objective(model, images, targets) -> (loss, {column: value})`; the default is the Focal
Tversky loss, kd.py passes a distillation objective. Runs single-process, or under torchrun as
DistributedDataParallel (one process per device; BATCH_SIZE is per process).

train() reads top to bottom: `build_run` (data, model, optimizer, schedulers, resume), then per epoch
`train_one_epoch` (lib/train/step.py's `optimizer_step` per batch), `evaluate`, and the CheckpointSaver of
lib/train/checkpoint_saver.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from lib.train.baseline import baseline_line, threshold_baseline
from lib.train.batchnorm import refresh_batchnorm
from lib.checkpoint import load_state, read_checkpoint
from lib.train.checkpoint_saver import CheckpointSaver, deferred_sigint  # noqa: F401 (deferred_sigint: re-exported)
from lib.config import Constants, as_constants
from lib.data.factory import build_datasets, data_settings
from lib.data.loader import make_loader
from lib.train.encoder_weights import load_encoder_weights
from lib.train.init_checkpoint import load_init_checkpoint
from lib.errors import CheckpointError, TrainingError
from lib.train.collapse import constant_answer_line
from lib.train.loss import supervised_loss
from lib.train.metrics import BandConfusion
from lib.models.factory import build_model, used_parameters
from lib.train.records import checkpoint, summary, training_state
from lib.train.resume import check_resume, describe, record_resume, restore_rng_state
from lib.train.run_lock import holds_output_dir, output_dir_of
from lib.train.messages import interrupted as interrupted_message, non_finite_loss
from lib.runtime import autocast, distributed_context, keep_freed_memory, seed_everything, speed_settings
from lib.train.step import Optimization, SupervisedObjective, optimizer_step

__all__ = ["train", "build_run", "train_one_epoch", "evaluate", "Run", "Progress", "SupervisedObjective",
           "deferred_sigint", "TrainingError"]


# ------------------------------------------------------------------------------------------ training

@holds_output_dir  # one run per OUTPUT_DIR (a lock file), which is checked writable before any work
def train(constants: Constants | dict, model_name: str, model_args: dict,
          objective: Callable | None = None, extra_summary: Callable[[], dict] | None = None) -> dict:
    """Train `model_name` with the script's constants; writes best.pt, last.pt, history.csv,
    summary.json and curves.png to OUTPUT_DIR and returns the summary."""
    run = build_run(constants, model_name, model_args, objective, extra_summary)
    c, progress = run.c, run.progress
    run.log(f"{model_name}: {run.parameters['held']:,} parameters held, {run.parameters['used']:,} used in the "
            f"forward pass; device {run.device}, precision {run.precision}, channels_last "
            f"{int(run.speed['channels_last'])}, compile {int(run.speed['compile'])}, {run.world_size} process(es), "
            f"output {run.output_dir}")
    saver = CheckpointSaver(run.output_dir, enabled=run.is_main)
    interrupted = False
    try:
        while progress.epoch < c["EPOCHS"] and progress.stale_epochs < c["PATIENCE"]:
            epoch, epoch_started = progress.epoch + 1, time.time()
            seed_epoch(run, epoch)
            means = train_one_epoch(run, epoch)
            refresh_batchnorm(run.model, run.train_loader, run.device, run.precision, run.memory_format)
            val_loss, metrics = evaluate(run.net, run.val_loader, run.loss_fn, c["VAL_BANDS"], run.device,
                                         run.precision, progress=run.is_main and c["PROGRESS"])
            if progress.step >= run.optimization.warmup_steps:
                run.plateau.step(val_loss)
            row = {"epoch": epoch, "lr": run.optimization.optimizer.param_groups[0]["lr"], "train_loss": means[0],
                   **dict(zip(run.objective.columns, means[1:])), "val_loss": val_loss,
                   **{f"val_{k}": v for k, v in metrics.items()}, "epoch_time_s": round(time.time() - epoch_started, 2)}
            improved = progress.record(row, metrics["iou"])
            saver.save_epoch(checkpoint(run, metrics), training_state(run), improved, progress.history, summary(run))
            log_epoch(run, row, improved)
    except KeyboardInterrupt:
        interrupted = True
        run.log("\n" + interrupted_message(run.output_dir, progress.epoch))
    final = summary(run)
    saver.save_final(final, progress.history, c["VAL_BANDS"])
    if not interrupted:
        log_end(run, final)
    if run.world_size > 1:
        dist.barrier()
    if interrupted:
        raise SystemExit(130)  # 128 + SIGINT, the shell's code for Ctrl-C: the engine's only exit
    return final


def seed_epoch(run: Run, epoch: int) -> None:
    """Everything random in an epoch derives from (SEED, epoch), so a resumed run replays it exactly."""
    epoch_seed = run.c["SEED"] * 1_000_003 + epoch
    seed_everything(epoch_seed + run.rank)
    run.generator.manual_seed(epoch_seed)
    transform = getattr(run.train_set, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(epoch_seed + run.rank)
    if isinstance(run.train_loader.sampler, DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)


def train_one_epoch(run: Run, epoch: int) -> list[float]:
    """One pass over the training data, one optimizer step per batch; returns the mean loss and the mean
    of each objective column (averaged over processes). A non-finite loss stops the run."""
    run.net.train()
    device, steps = run.device, len(run.train_loader)
    sums = torch.zeros(1 + len(run.objective.columns), dtype=torch.float64, device=device)
    first_bad_step = -1
    bar = tqdm(run.train_loader, desc=f"epoch {epoch}/{run.c['EPOCHS']}", leave=False,
               disable=None if run.is_main and run.c["PROGRESS"] else True, mininterval=1.0)
    for step, (images, targets, _) in enumerate(bar):
        images = images.to(device, non_blocking=True, memory_format=run.memory_format)
        targets = targets.to(device, non_blocking=True)
        loss, extras = optimizer_step(run.net, run.objective, images, targets, run.optimization, run.progress.step)
        run.progress.step += 1
        values = torch.stack([loss.detach().double(), *(extras[k].detach().double() for k in run.objective.columns)])
        sums += values
        if device.type == "cpu" or step % 20 == 0 or step == steps - 1:  # a sync costs nothing on CPU
            if not torch.isfinite(values).all():
                first_bad_step = step + 1
                break
            bar.set_postfix(loss=f"{float(values[0]):.4f}", refresh=False)
    if first_bad_step >= 0 or not torch.isfinite(sums).all():
        known = first_bad_step >= 0
        raise non_finite_loss(epoch, first_bad_step if known else None, values if known else sums, run.objective.columns,
                              known and run.progress.step == first_bad_step == 1, run.progress.epoch, run.output_dir)
    if run.world_size > 1:
        dist.all_reduce(sums)
        sums /= run.world_size
    return (sums / max(steps, 1)).tolist()


def log_epoch(run: Run, row: dict, improved: bool) -> None:
    bands = " ".join(f"{b} {row[f'val_iou_{b}']:.3f}" for b in run.c["VAL_BANDS"])
    extra = "".join(f" {k} {row[k]:.4f}" for k in run.objective.columns)
    run.log(f"epoch {row['epoch']:3d}/{run.c['EPOCHS']} lr {row['lr']:.2e} train {row['train_loss']:.4f}{extra} "
            f"val {row['val_loss']:.4f} IoU {bands} mean {row['val_iou']:.3f} ({row['epoch_time_s']:.1f} s)"
            f"{' *' if improved else ''}")
    collapsed = constant_answer_line(run.progress.history, run.c["VAL_BANDS"])  # one line per streak
    if collapsed:
        run.log(collapsed)


def log_end(run: Run, final: dict) -> None:
    c = run.c
    if run.progress.stale_epochs >= c["PATIENCE"]:
        run.log(f"early stop: no improvement for {c['PATIENCE']} epochs")
    best = " ".join(f"{b} {final.get(f'val_iou_{b}', float('nan')):.3f}" for b in c["VAL_BANDS"])
    run.log(f"best epoch {run.progress.best_epoch}: IoU {best} mean {final.get('val_iou', float('nan')):.3f}; "
            f"{final['wall_time_s']:.0f} s; outputs in {run.output_dir}")


# ------------------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn: nn.Module, bands, device: torch.device,
             precision: str = "fp32", progress: bool = False, confusion: BandConfusion | None = None,
             observe: Callable | None = None) -> tuple[float, dict[str, float]]:
    """Mean loss and dataset-wide per-band metrics over `loader` (items: image, target, band index);
    observe(logits, targets), when given, sees every batch in turn (evaluate.py's recall by bin).

    The loss is the mean over items of each item's own loss, so it does not depend on how the items
    are batched or sharded; under torch.distributed the sums and counts are reduced over all ranks."""
    was_training = model.training
    model.eval()
    confusion = BandConfusion(bands) if confusion is None else confusion  # a caller's, to read its counts
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    items = 0
    for images, targets, band_index in tqdm(loader, desc="val", leave=False, disable=None if progress else True):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images).float()
        for i in range(len(images)):  # the Focal Tversky loss pools a batch: score each item alone
            loss_sum += loss_fn(logits[i:i + 1], targets[i:i + 1]).double()
        items += len(images)
        confusion.update(logits, targets, band_index)
        if observe is not None:
            observe(logits, targets)
    totals = torch.cat([loss_sum.reshape(1).cpu(), torch.tensor([float(items)], dtype=torch.float64)])
    if dist.is_initialized():
        reduced = [t.to(device) for t in (confusion.counts, confusion.image_iou, totals)]
        for tensor in reduced:
            dist.all_reduce(tensor)
        confusion.counts, confusion.image_iou, totals = (t.cpu() for t in reduced)
    model.train(was_training)
    return float(totals[0] / max(totals[1], 1.0)), confusion.compute()


# ---------------------------------------------------------------------------------------------- setup

@dataclass
class Progress:
    """The counters a resumed run continues from (last.pt: training_state.progress)."""
    epoch: int = 0
    step: int = 0
    best_iou: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    resumes: list[dict] = field(default_factory=list)  # what each RESUME changed (lib/train/resume.py)

    def record(self, row: dict, iou: float) -> bool:
        """Append the epoch's history row; True where its mean validation IoU is the best so far."""
        self.epoch = row["epoch"]
        self.history.append(row)
        improved = iou > self.best_iou
        if improved:
            self.best_iou, self.best_epoch, self.stale_epochs = iou, self.epoch, 0
        else:
            self.stale_epochs += 1
        return improved


@dataclass
class Run:
    """Everything a training run holds, built once by `build_run`."""
    constants: dict            # as the script gave them (recorded in checkpoints and summary.json): c.given
    c: Constants               # resolved once: completed with the defaults and the data format's bands
    model_name: str
    model_args: dict
    rank: int
    world_size: int
    device: torch.device
    output_dir: Path
    speed: dict                # resolved precision, channels_last, compile
    data_info: dict            # what the model expects of its input (lib.data.factory.data_settings)
    train_set: object
    val_set: object
    generator: torch.Generator
    train_loader: DataLoader
    val_loader: DataLoader
    model: nn.Module           # the plain model, whose state_dict the checkpoints hold
    net: nn.Module             # what runs: the model, wrapped in DDP and/or compiled
    parameters: dict           # {"held", "used"}
    parameters_trained: int
    encoder_weights: str
    loss_fn: nn.Module
    objective: Callable
    optimization: Optimization
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
    started: float = field(default_factory=time.time)
    extra_summary: Callable[[], dict] | None = None
    progress: Progress = field(default_factory=Progress)
    baseline: dict | None = None  # lib.train.baseline.threshold_baseline: the threshold per band, scored on val

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def precision(self) -> str:
        return self.speed["precision"]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.speed["channels_last"] else torch.contiguous_format

    def log(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs)


def build_run(constants: Constants | dict, model_name: str, model_args: dict, objective: Callable | None = None,
              extra_summary: Callable[[], dict] | None = None) -> Run:
    """Data, model, objective, optimizer and schedulers of a run, resumed from last.pt with RESUME. `constants`:
    load_constants' Constants, trusted as they are (a plain dict is resolved here, once)."""
    started = time.time()
    c = as_constants(constants)
    constants = c.given
    if c["INPUT_BANDS"]:  # the bands as channels; recorded in the checkpoint's model args, so it rebuilds
        model_args = {**model_args, "in_channels": len(c["INPUT_BANDS"])}
    rank, world_size, device = distributed_context(c["DEVICE"])
    log = print if rank == 0 else (lambda *args, **kwargs: None)
    speed = speed_settings(c, device)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for every step's activations (up to 4x faster steps here)
    memory_format = torch.channels_last if speed["channels_last"] else torch.contiguous_format
    seed_everything(c["SEED"])
    resumed = read_resume(c, constants, model_name, model_args, world_size) if c["RESUME"] else None

    train_set, val_set = build_datasets(c, log=log)
    if resumed and resumed[0].get("baseline") is not None:  # resume changes no data: the recorded fit holds
        baseline = resumed[0]["baseline"]
        log(baseline_line(baseline))
    else:
        baseline = threshold_baseline(train_set, val_set, c["VAL_BANDS"], log)  # what one threshold per band scores
    generator = torch.Generator().manual_seed(c["SEED"])
    train_loader = make_loader(train_set, c, True, device, generator, rank, world_size)
    val_loader = make_loader(val_set, c, False, device, None, rank, world_size)

    model = build_model(model_name, model_args)
    encoder_weights = "not applicable"
    if hasattr(model, "encoder") and "ENCODER_WEIGHTS" in constants:
        encoder_weights = load_encoder_weights(model, c["ENCODER_WEIGHTS"], model_args.get("encoder_name", "mobilenet_v2"), log)
    if c["INIT_CHECKPOINT"] and not resumed:  # a resumed run's weights come from last.pt
        load_init_checkpoint(model, c["INIT_CHECKPOINT"], model_name, model_args, c["INPUT_BANDS"], log)
    model.to(device, memory_format=memory_format)
    parameters, trainable = freeze_unused(model, c["IMAGE_SIZE"], model_args.get("in_channels", 1))
    net = wrap(model, c, world_size, speed["compile"])

    loss_fn = supervised_loss(c).to(device)
    objective = objective or SupervisedObjective(loss_fn)
    if hasattr(objective, "start"):  # a plug-in's one-time setup (kd.py: move its teacher, score it on val)
        objective.start(device=device, val_loader=val_loader, precision=speed["precision"], memory_format=memory_format)
    # a plug-in's own trained modules (kd.py's feature adapter) take the student's optimizer, and last.pt
    plugin_trained = list(objective.parameters()) if hasattr(objective, "parameters") else []
    optimizer = torch.optim.AdamW(trainable + plugin_trained, lr=c["LR"], weight_decay=c["WEIGHT_DECAY"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["PLATEAU_FACTOR"],
                                                         patience=c["PLATEAU_PATIENCE"])
    optimization = Optimization.for_precision(optimizer, speed["precision"], device, c["LR"],
                                              max(1, c["WARMUP_EPOCHS"] * len(train_loader)))

    run = Run(constants=constants, c=c, model_name=model_name, model_args=model_args, rank=rank,
              world_size=world_size, device=device, output_dir=output_dir_of(c, model_name),
              speed=speed, data_info=data_settings(c), train_set=train_set, val_set=val_set, generator=generator,
              train_loader=train_loader, val_loader=val_loader, model=model, net=net, parameters=parameters,
              parameters_trained=sum(p.numel() for p in trainable), encoder_weights=encoder_weights, loss_fn=loss_fn,
              objective=objective, optimization=optimization, plateau=plateau, started=started,
              extra_summary=extra_summary, baseline=baseline)
    if resumed:
        resume(run, *resumed)
    return run


def freeze_unused(model: nn.Module, image_size: int, in_channels: int = 1) -> tuple[dict, list[nn.Parameter]]:
    """Only the parameters that run in the forward pass are trained: ({"held", "used"} counts, trainable)."""
    used = {id(p) for p in used_parameters(model, image_size, in_channels)}
    counts = {"held": sum(p.numel() for p in model.parameters()),
              "used": sum(p.numel() for p in model.parameters() if id(p) in used)}
    for p in model.parameters():
        p.requires_grad_(id(p) in used)
    return counts, [p for p in model.parameters() if p.requires_grad]


def wrap(model: nn.Module, c: dict, world_size: int, compile_model: bool) -> nn.Module:
    """The network the steps run: SyncBatchNorm and DDP under torchrun, torch.compile with COMPILE."""
    if world_size > 1 and c["SYNC_BN"]:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    return torch.compile(net) if compile_model else net


def read_resume(c: dict, constants: dict, model_name: str, model_args: dict, world_size: int) -> tuple[dict, dict]:
    """(last.pt, the changes resume allows) of the run RESUME continues, refused before any data is read
    when it is not the same run."""
    last = output_dir_of(c, model_name) / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"RESUME=1 but {last} does not exist (start without RESUME, or set OUTPUT_DIR "
                              f"to the folder of the run to continue)")
    checkpoint = read_checkpoint(last)
    return checkpoint, check_resume(checkpoint, last, constants, model_name, model_args, data_settings(c), world_size)


def resume(run: Run, checkpoint: dict, changes: dict) -> None:
    """Model, optimizer, schedulers, scaler, counters and RNG states from OUTPUT_DIR/last.pt (read by
    `read_resume`); best.pt re-derived if a kill between the two writes left it behind."""
    last = run.output_dir / "last.pt"
    state = checkpoint["training_state"]
    load_state(run.model, checkpoint["state_dict"], str(last))
    run.optimization.optimizer.load_state_dict(state["optimizer"])
    run.plateau.load_state_dict(state["plateau"])
    run.optimization.scaler.load_state_dict(state["scaler"])
    run.progress = Progress(**state["progress"])
    if "objective" in state:
        run.objective.load_state_dict(state["objective"])
    run.progress.resumes = record_resume(run.progress.resumes, run.progress.epoch, changes)
    restore_rng_state(state.get("rng"))
    CheckpointSaver(run.output_dir, enabled=run.is_main).repair_best(checkpoint)
    run.log(f"resumed from {last} after epoch {run.progress.epoch}" + (f"; changed: {describe(changes)}" if changes else ""))
