"""A checkpoint scored on a split as its training run read it: the split built from the checkpoint's recorded
data settings, the metrics computed by the engine's own `evaluate` (so they match the training log), the
confusion counts behind them, and the thresholds the run fitted. evaluate.py and benchmark_real.py score
with these."""
from __future__ import annotations

from pathlib import Path

import torch

from lib.checkpoint import CheckpointError
from lib.config import with_defaults
from lib.data.factory import checkpoint_dataset
from lib.data.loader import make_loader
from lib.errors import ConfigError
from lib.runtime import speed_settings
from lib.train.baseline import fit_thresholds, recorded_thresholds
from lib.train.engine import evaluate
from lib.train.loss import supervised_loss
from lib.train.metrics import BandConfusion


def build_dataset(data: dict, constants: dict, root: Path, split: str, bands):
    """(dataset, bands) of `root` for a checkpoint's data settings (lib.data.factory.checkpoint_dataset: the band
    layout root/split/img, lab, or KOMPSAT-5 list files), once the bands asked for are checked against them."""
    normalization = data.get("normalization") or {}
    if data.get("format", "bands") == "kompsat5":
        bands = list(bands or data.get("val_bands") or ["HH"])
        if bands != ["HH"]:
            raise ConfigError(f"KOMPSAT-5 checkpoints have one band, HH; got --bands {' '.join(bands)}")
        return checkpoint_dataset(data, constants, root, split, bands), bands
    if data.get("format", "bands") != "bands":
        raise CheckpointError(f"data format {data.get('format')!r} is not one evaluate.py reads (bands, kompsat5)")
    bands = list(bands or data.get("val_bands") or constants["VAL_BANDS"])
    unknown = [band for band in bands if band not in normalization]
    if unknown:
        raise ConfigError(f"no normalization range recorded for band(s) {', '.join(unknown)}; "
                          f"the checkpoint knows {', '.join(normalization) or 'none'}")
    # the checkpoint's PRELOAD, so the input is the training run's to the bit (a large preloaded split is float16)
    return checkpoint_dataset(data, constants, root, split, bands, preload=constants["PRELOAD"]), bands


def checkpoint_split(checkpoint: dict, root: Path, split: str, bands):
    """(dataset, bands) of `root/split` as the checkpoint's training run read it (build_dataset)."""
    constants = with_defaults(checkpoint.get("constants") or {})
    return build_dataset(checkpoint.get("data") or {}, constants, root, split, bands)


def evaluate_checkpoint(model, checkpoint: dict, path: Path, dataset, bands, root: Path, split: str, batch_size: int,
                        device, precision: str = "auto", workers="auto", progress: bool = False,
                        observe=None) -> dict:
    """Metrics of a loaded checkpoint (lib.checkpoint.load_model) on `dataset` (checkpoint_split: built from
    checkpoint["data"], normalization, bands, image size), computed as in training by lib.train.engine.evaluate.
    observe: see lib.train.engine.evaluate. Returns one result row (with "counts": {band: [tp, fp, fn, tn]}, the confusion counts behind the metrics)."""
    constants = with_defaults(checkpoint.get("constants") or {})
    c = {**constants, "BATCH_SIZE": batch_size, "NUM_WORKERS": workers}
    loader = make_loader(dataset, c, False, device, None)
    speed = speed_settings({"PRECISION": precision}, device)  # as in training: "auto" -> the same kernels
    precision = speed["precision"]
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    confusion = BandConfusion(bands)
    loss, metrics = evaluate(model, loader, supervised_loss(c).to(device), bands, device, precision, progress=progress,
                             confusion=confusion, observe=observe)
    counts = {band: confusion.counts[i].tolist() for i, band in enumerate(bands)}  # (tp, fp, fn, tn), for pooling
    patches = len(getattr(dataset, "patches", None) or getattr(dataset, "samples", []))
    return {"checkpoint": str(path), "model": checkpoint["model"]["name"], "epoch": checkpoint.get("epoch"),
            "data_root": str(root), "split": split, "bands": " ".join(bands), "patches": patches,
            "items": len(dataset), "loss": loss, **metrics, "counts": counts}


def checkpoint_thresholds(checkpoint: dict, dataset, bands, split: str) -> tuple[dict, str]:
    """(band -> (Threshold, fit IoU), where fitted): those the checkpoint's run fitted on its training split,
    else fitted on the evaluated split."""
    thresholds = recorded_thresholds(checkpoint.get("baseline"), bands)
    if thresholds is None:
        return fit_thresholds(dataset, bands), f"{split} (evaluated split)"
    return thresholds, (checkpoint.get("baseline") or {}).get("fitted_on", "train")
