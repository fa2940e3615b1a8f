"""The one training loop, used by every train script and by kd.py.

    summary = train(constants, "PSPMixer", {"patch": 16, "hidden": 48, "depth": 3})

`constants` are the script's UPPER_CASE constants (after command-line overrides). The loss is a
plug-in: `objective(model, images, targets) -> (loss, {column: value})`; the default is the Focal
Tversky loss, kd.py passes a distillation objective. Runs single-process, or under torchrun as
DistributedDataParallel (one process per device; BATCH_SIZE is per process).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from lib.augmentation import seed_worker
from lib.config import DEFAULTS
from lib.checkpoint import FORMAT, load_state, plain, read_checkpoint, save_checkpoint
from lib.data import build_datasets, data_settings, resolve_data_constants
from lib.encoder_weights import load_encoder_weights
from lib.errors import TrainingError
from lib.loss import FocalTverskyLoss
from lib.metrics import BandConfusion
from lib.model import build_model, used_parameters
from lib.plotting import plot_curves
from lib.runtime import (autocast, keep_freed_memory, library_versions, resolve_device, resolve_workers,
                         seed_everything, speed_settings)



class SupervisedObjective:
    """Focal Tversky loss on the model's logits."""
    columns: tuple[str, ...] = ()

    def __init__(self, loss_fn: nn.Module):
        self.loss_fn = loss_fn

    def __call__(self, model, images, targets):
        return self.loss_fn(model(images), targets), {}


def supervised_loss(c: dict) -> FocalTverskyLoss:
    c = {**DEFAULTS, **c}
    return FocalTverskyLoss(alpha=c["FTL_ALPHA"], beta=c["FTL_BETA"], gamma=c["FTL_GAMMA"])


# ----------------------------------------------------------------------------------------------- setup

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


def make_loader(dataset, c: dict, train: bool, device: torch.device, generator: torch.Generator | None,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    workers = resolve_workers(c["NUM_WORKERS"])
    sampler = None
    if world_size > 1:
        if train:
            sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=c["SEED"])
        else:  # a plain shard: every item exactly once over all ranks, so reduced metrics are exact
            dataset = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=c["BATCH_SIZE"], shuffle=train and sampler is None, sampler=sampler,
                      drop_last=train and len(dataset) > c["BATCH_SIZE"], num_workers=workers,
                      worker_init_fn=seed_worker, generator=generator, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def optimizer_state(optimizer, plateau, scaler) -> dict:
    return {"optimizer": optimizer.state_dict(), "plateau": plateau.state_dict(), "scaler": scaler.state_dict()}


def rng_state() -> dict:
    import random

    import numpy as np
    numpy_state = np.random.get_state()
    return {"python": plain(random.getstate()), "torch": torch.get_rng_state(),
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


# ------------------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn: nn.Module, bands, device: torch.device,
             precision: str = "fp32", progress: bool = False) -> tuple[float, dict[str, float]]:
    """Mean loss and dataset-wide per-band metrics over `loader` (items: image, target, band index).
    Under torch.distributed, counts and losses are summed over all ranks."""
    was_training = model.training
    model.eval()
    confusion = BandConfusion(bands)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    items = 0
    for images, targets, band_index in tqdm(loader, desc="val", leave=False, disable=None if progress else True):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
        loss_sum += loss_fn(logits.float(), targets).double() * len(images)
        items += len(images)
        confusion.update(logits.float(), targets, band_index)
    totals = torch.cat([loss_sum.reshape(1).cpu(), torch.tensor([float(items)], dtype=torch.float64)])
    if dist.is_initialized():
        reduced = [t.to(device) for t in (confusion.counts, confusion.image_iou, totals)]
        for tensor in reduced:
            dist.all_reduce(tensor)
        confusion.counts, confusion.image_iou, totals = (t.cpu() for t in reduced)
    model.train(was_training)
    return float(totals[0] / max(totals[1], 1.0)), confusion.compute()


# ------------------------------------------------------------------------------------------- training

def train(constants: dict, model_name: str, model_args: dict,
          objective: Callable | None = None, extra_summary: Callable[[], dict] | None = None) -> dict:
    """Train `model_name` with the script's constants; writes best.pt, last.pt, history.csv,
    summary.json and curves.png to OUTPUT_DIR and returns the summary."""
    c = resolve_data_constants(constants)
    started = time.time()
    rank, world_size, device = distributed_context(c["DEVICE"])
    is_main = rank == 0
    log = print if is_main else (lambda *args, **kwargs: None)
    output_dir = Path(c["OUTPUT_DIR"] or f"runs/{model_name.lower()}")
    speed = speed_settings(c, device)  # precision, channels_last, compile
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for every step's activations (up to 4x faster steps here)
    precision = speed["precision"]
    memory_format = torch.channels_last if speed["channels_last"] else torch.contiguous_format
    seed_everything(c["SEED"])

    # data
    train_set, val_set = build_datasets(c, log=log)
    generator = torch.Generator().manual_seed(c["SEED"])
    train_loader = make_loader(train_set, c, True, device, generator, rank, world_size)
    val_loader = make_loader(val_set, c, False, device, None, rank, world_size)
    train_transform = getattr(train_set, "transform", None)

    # model: only the parameters that run in the forward pass are trained
    model = build_model(model_name, model_args)
    encoder_weights = "not applicable"
    if hasattr(model, "encoder") and "ENCODER_WEIGHTS" in constants:
        encoder_weights = load_encoder_weights(model, c["ENCODER_WEIGHTS"], model_args.get("encoder_name", "mobilenet_v2"), log)
    model.to(device, memory_format=memory_format)
    used = {id(p) for p in used_parameters(model, c["IMAGE_SIZE"])}
    counts = {"held": sum(p.numel() for p in model.parameters()),
              "used": sum(p.numel() for p in model.parameters() if id(p) in used)}
    for p in model.parameters():
        p.requires_grad_(id(p) in used)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if world_size > 1 and c["SYNC_BN"]:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    if speed["compile"]:
        net = torch.compile(net)

    loss_fn = supervised_loss(c).to(device)
    objective = objective or SupervisedObjective(loss_fn)
    if hasattr(objective, "start"):  # a plug-in's one-time setup (kd.py: move its teacher, score it on val)
        objective.start(device=device, val_loader=val_loader, precision=precision, memory_format=memory_format)
    # a plug-in's own trained modules (kd.py's feature adapter) take the student's optimizer, and last.pt
    plugin_trained = list(objective.parameters()) if hasattr(objective, "parameters") else []
    optimizer = torch.optim.AdamW(trainable + plugin_trained, lr=c["LR"], weight_decay=c["WEIGHT_DECAY"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["PLATEAU_FACTOR"],
                                                         patience=c["PLATEAU_PATIENCE"])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    warmup_steps = max(1, c["WARMUP_EPOCHS"] * len(train_loader))

    data_info = data_settings(c)
    state = {"epoch": 0, "step": 0, "best_iou": -1.0, "best_epoch": 0, "stale_epochs": 0, "history": []}

    if c["RESUME"]:
        last = output_dir / "last.pt"
        if not last.is_file():
            raise SystemExit(f"error: RESUME=1 but {last} does not exist")
        checkpoint = read_checkpoint(last)
        load_state(model, checkpoint["state_dict"], str(last))
        optimizer.load_state_dict(checkpoint["training_state"]["optimizer"])
        plateau.load_state_dict(checkpoint["training_state"]["plateau"])
        scaler.load_state_dict(checkpoint["training_state"]["scaler"])
        state.update(checkpoint["training_state"]["progress"])
        if "objective" in checkpoint["training_state"]:
            objective.load_state_dict(checkpoint["training_state"]["objective"])
        log(f"resumed from {last} after epoch {state['epoch']}")

    def checkpoint_dict(metrics: dict, with_training_state: bool) -> dict:
        checkpoint = {"format": FORMAT, "model": {"name": model_name, "args": plain(model_args)},
                      "state_dict": model.state_dict(), "data": plain(data_info), "metrics": plain(metrics),
                      "epoch": state["epoch"], "parameters": counts, "constants": plain(constants)}
        if with_training_state:
            checkpoint["training_state"] = {**optimizer_state(optimizer, plateau, scaler),
                                            "progress": plain(state), "rng": rng_state()}
            if plugin_trained:
                checkpoint["training_state"]["objective"] = objective.state_dict()
        return checkpoint

    def summary(wall: float) -> dict:
        best = next((row for row in state["history"] if row["epoch"] == state["best_epoch"]), {})
        result = {"model": model_name, "model_args": plain(model_args), "best_epoch": state["best_epoch"],
                  **{k: v for k, v in best.items() if k.startswith("val_")},
                  "epochs_run": state["epoch"], "parameters": counts, "parameters_trained": sum(p.numel() for p in trainable),
                  "encoder_weights": encoder_weights, "device": str(device), **speed,
                  "world_size": world_size, "num_workers": resolve_workers(c["NUM_WORKERS"]),
                  "data": {"root": str(c["DATA_ROOT"]), **plain(data_info), "train_patches": len(train_set),
                           "val_items": len(val_set),
                           "skipped": {"train": dict(train_set.skipped), "val": dict(val_set.skipped)}},
                  "constants": plain(constants), "wall_time_s": round(wall, 1), "versions": library_versions()}
        if extra_summary:
            result.update(plain(extra_summary()))
        return result

    log(f"{model_name}: {counts['held']:,} parameters held, {counts['used']:,} used in the forward pass; "
        f"device {device}, precision {precision}, channels_last {int(speed['channels_last'])}, "
        f"compile {int(speed['compile'])}, {world_size} process(es), output {output_dir}")
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    interrupted = False

    try:
        while state["epoch"] < c["EPOCHS"] and state["stale_epochs"] < c["PATIENCE"]:
            epoch = state["epoch"] + 1
            epoch_started = time.time()
            # Everything random in an epoch derives from (SEED, epoch), so a resumed run replays it exactly.
            epoch_seed = c["SEED"] * 1_000_003 + epoch
            seed_everything(epoch_seed + rank)
            generator.manual_seed(epoch_seed)
            if hasattr(train_transform, "set_random_seed"):
                train_transform.set_random_seed(epoch_seed + rank)
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)

            net.train()
            sums = torch.zeros(1 + len(objective.columns), dtype=torch.float64, device=device)
            first_bad_step = -1
            steps = len(train_loader)
            bar = tqdm(train_loader, desc=f"epoch {epoch}/{c['EPOCHS']}", leave=False,
                       disable=None if is_main and c["PROGRESS"] else True, mininterval=1.0)
            for step, (images, targets, _) in enumerate(bar):
                if state["step"] < warmup_steps:
                    for group in optimizer.param_groups:
                        group["lr"] = c["LR"] * (state["step"] + 1) / warmup_steps
                images = images.to(device, non_blocking=True, memory_format=memory_format)
                targets = targets.to(device, non_blocking=True)
                with autocast(device, precision):
                    loss, extras = objective(net, images, targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                state["step"] += 1
                values = torch.stack([loss.detach().double(), *(extras[k].detach().double() for k in objective.columns)])
                sums += values
                if device.type == "cpu" or step % 20 == 0 or step == steps - 1:  # a sync costs nothing on CPU
                    if first_bad_step < 0 and not torch.isfinite(values).all():
                        first_bad_step = step + 1
                        break
                    bar.set_postfix(loss=f"{float(values[0]):.4f}", refresh=False)
            if first_bad_step >= 0 or not torch.isfinite(sums).all():
                where = f"step {first_bad_step}" if first_bad_step >= 0 else "one of its steps"
                raise TrainingError(f"non-finite training loss at epoch {epoch}, {where}; stopping. "
                                    f"The last good checkpoint ({output_dir / 'last.pt'}) is kept. "
                                    f"Try a lower LR or check the input data for extreme values")
            if world_size > 1:
                dist.all_reduce(sums)
                sums /= world_size
            means = (sums / max(steps, 1)).tolist()

            val_loss, metrics = evaluate(net, val_loader, loss_fn, c["VAL_BANDS"], device, precision,
                                         progress=is_main and c["PROGRESS"])
            if state["step"] >= warmup_steps:
                plateau.step(val_loss)
            state["epoch"] = epoch
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": means[0],
                   **dict(zip(objective.columns, means[1:])), "val_loss": val_loss,
                   **{f"val_{k}": v for k, v in metrics.items()}, "epoch_time_s": round(time.time() - epoch_started, 2)}
            state["history"].append(row)
            improved = metrics["iou"] > state["best_iou"]
            if improved:
                state.update(best_iou=metrics["iou"], best_epoch=epoch, stale_epochs=0)
            else:
                state["stale_epochs"] += 1

            if is_main:
                # Writes are atomic (a kill leaves the previous file); Ctrl-C waits until they are done
                # and then stops the run (a SIGINT during the writes is held, not lost).
                with deferred_sigint():
                    if improved:
                        save_checkpoint(checkpoint_dict(metrics, False), output_dir / "best.pt")
                    save_checkpoint(checkpoint_dict(metrics, True), output_dir / "last.pt")
                    write_history(state["history"], output_dir / "history.csv")
                    write_json(summary(time.time() - started), output_dir / "summary.json")
            band_ious = " ".join(f"{b} {metrics[f'iou_{b}']:.3f}" for b in c["VAL_BANDS"])
            extra = "".join(f" {k} {v:.4f}" for k, v in zip(objective.columns, means[1:]))
            log(f"epoch {epoch:3d}/{c['EPOCHS']} lr {row['lr']:.2e} train {means[0]:.4f}{extra} val {val_loss:.4f} "
                f"IoU {band_ious} mean {metrics['iou']:.3f} ({row['epoch_time_s']:.1f} s){' *' if improved else ''}")
    except KeyboardInterrupt:
        interrupted = True
        log(f"\ninterrupted: {output_dir / 'last.pt'} holds epoch {state['epoch']}; continue with RESUME=1")

    final = summary(time.time() - started)
    if is_main:
        write_json(final, output_dir / "summary.json")
        if state["history"]:
            plot_curves(state["history"], c["VAL_BANDS"], output_dir / "curves.png")
        if not interrupted:
            if state["stale_epochs"] >= c["PATIENCE"]:
                log(f"early stop: no improvement for {c['PATIENCE']} epochs")
            best = " ".join(f"{b} {final.get(f'val_iou_{b}', float('nan')):.3f}" for b in c["VAL_BANDS"])
            log(f"best epoch {state['best_epoch']}: IoU {best} mean {final.get('val_iou', float('nan')):.3f}; "
                f"{final['wall_time_s']:.0f} s; outputs in {output_dir}")
    if world_size > 1:
        dist.barrier()
    if interrupted:
        raise SystemExit(130)
    return final


@contextmanager
def deferred_sigint():
    """Hold a SIGINT (Ctrl-C) that arrives inside the block and raise KeyboardInterrupt at its end, so a
    write in progress completes and the interrupt still stops the run. Where SIGINT is ignored (a run
    started in the background or with nohup), it stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def write_history(history: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in history for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def write_json(data: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, allow_nan=False, default=str))
    os.replace(temporary, path)
