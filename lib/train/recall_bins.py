"""Recall of water by backscatter bin: where in dB a model misses water, beside a threshold (evaluate.py).

Real water is not one level: smooth water is very dark, wind-roughened or shallow water and flooded
vegetation a few dB brighter. A model that calls the brighter water land has a high precision and a low
recall overall; binned by the pixel's own backscatter (2 dB bins of the raw value, before normalization)
the recall shows the level below which the model finds water, to set beside the threshold's.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from lib.data.bands import band_unit
from lib.data.dataset import read_npy
from lib.runtime import autocast

BIN_DB = 2.0
MIN_WATER_SHARE = 0.01   # bins holding less of the band's water pixels are left out of the printed table


def dataset_supported(dataset) -> bool:
    """Band patch datasets, validation order (item -> patch, band): the raw dB files are at hand."""
    return hasattr(dataset, "patches") and hasattr(dataset, "locate") and not getattr(dataset, "train", False)


class RecallTally:
    """Tallies the water of each validation item by bin as predictions arrive in dataset order (`add`:
    the logits and targets of the next items), so evaluate.py bins the pass that scored the model."""

    def __init__(self, dataset, bands, thresholds: dict | None):
        self.dataset, self.thresholds, self.next = dataset, thresholds, 0
        db_bands = [band for band in bands if band_unit(band) == "dB"] if dataset_supported(dataset) else []
        self.tallies = {band: defaultdict(lambda: np.zeros(3, np.int64)) for band in db_bands}  # water, model, threshold

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if not self.tallies:  # no dB band, or not a band patch dataset
            return
        predicted = (logits.float() >= 0)[:, 0].cpu().numpy()
        targets = targets[:, 0].cpu().numpy()
        for offset in range(len(predicted)):
            patch, band_index = self.dataset.locate(self.next + offset)
            band = self.dataset.bands[band_index]
            if band in self.tallies:
                raw = read_npy(self.dataset.patches[patch][1][band], self.dataset.image_size).astype(np.float32,
                                                                                                    copy=False)
                threshold = self.thresholds[band][0] if self.thresholds else None
                tally(self.tallies[band], raw, targets[offset], predicted[offset], threshold)
        self.next += len(predicted)

    def result(self) -> dict[str, list[dict]]:
        return {band: table(counts, self.thresholds is not None) for band, counts in self.tallies.items()}


@torch.no_grad()
def recall_by_bin(model, dataset, bands, thresholds: dict | None, device, precision: str = "fp32",
                  batch_size: int = 16) -> dict[str, list[dict]]:
    """{band: [{"low", "high", "water", "share", "model", "threshold"}, ...]} for the dB bands of `dataset`;
    `thresholds` band -> (Threshold, fit IoU) or None (no threshold column: "threshold" None). A pass of
    its own; evaluate.py feeds a RecallTally from its scoring pass instead."""
    recall = RecallTally(dataset, bands, thresholds)
    if not recall.tallies:
        return {}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item[0] for item in items]).to(device)
        with autocast(device, precision):
            logits = model(images)
        recall.add(logits, torch.stack([item[1] for item in items]))
    return recall.result()


def tally(counts: dict, raw: np.ndarray, target: np.ndarray, predicted: np.ndarray, threshold) -> None:
    """Add one image's water pixels per bin: (water, found by the model, found by the threshold)."""
    water = (target == 1) & np.isfinite(raw)
    values = raw[water]
    bins = np.floor(values / BIN_DB).astype(np.int64)
    by_model = predicted[water]
    by_threshold = threshold.predict(values) if threshold is not None else np.zeros(values.shape, bool)
    for b in np.unique(bins):
        in_bin = bins == b
        counts[int(b)] += [np.count_nonzero(in_bin), np.count_nonzero(by_model & in_bin),
                           np.count_nonzero(by_threshold & in_bin)]


def table(counts: dict, with_threshold: bool) -> list[dict]:
    total = sum(int(c[0]) for c in counts.values()) or 1
    return [{"low": b * BIN_DB, "high": (b + 1) * BIN_DB, "water": int(c[0]), "share": int(c[0]) / total,
             "model": int(c[1]) / int(c[0]), "threshold": int(c[2]) / int(c[0]) if with_threshold else None}
            for b, c in sorted(counts.items())]


def format_bins(name: str, bins: dict[str, list[dict]], threshold_names: dict[str, str] | None = None) -> str:
    """One block per band: the bins holding at least MIN_WATER_SHARE of its water pixels."""
    lines = []
    for band, rows in bins.items():
        shown = [row for row in rows if row["share"] >= MIN_WATER_SHARE]
        left = 1 - sum(row["share"] for row in shown)
        against = f" vs threshold {threshold_names[band]}" if threshold_names else ""
        lines.append(f"{name}: recall of water by {band} bin ({BIN_DB:g} dB), model{against}"
                     + (f" ({100 * left:.1f}% of the water in smaller bins, not shown)" if left > 1e-9 else ""))
        for row in shown:
            threshold = "" if row["threshold"] is None else f"  threshold {row['threshold']:.2f}"
            lines.append(f"  {row['low']:6.0f} .. {row['high']:4.0f} dB  {100 * row['share']:5.1f}% of water  "
                         f"model {row['model']:.2f}{threshold}")
    return "\n".join(lines)
