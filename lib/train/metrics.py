"""Dataset-wide confusion counts per band, and the metrics derived from them (smp.metrics).

Counts are summed over the whole split before any ratio is taken, so a metric is the dataset-wide
value, not a mean of per-batch values. The `_<band>` keys are per band; the plain keys average bands.

`iou_per_image` is the convention of the published KOMPSAT-5 evaluation: the mean over images of each
image's water IoU, where an image without water scores the IoU of the inverted masks (land IoU)
instead of 0/0. It is reported beside, never instead of, the dataset-wide `iou`.

A band without a single valid pixel (every label no-data, or every image pixel NaN) has no score: its
metrics are NaN, a warning names it, and the plain keys (the mean that picks best.pt) average the other
bands. Where no band has a valid pixel there is nothing to score, and that is a DataError.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import segmentation_models_pytorch as smp
import torch

from lib.data.labels import IGNORE_INDEX
from lib.errors import DataError

METRICS = {"iou": smp.metrics.iou_score, "f1": smp.metrics.f1_score, "precision": smp.metrics.precision,
           "recall": smp.metrics.recall, "accuracy": smp.metrics.accuracy}


def confusion_counts(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, 4] int64 water-class counts (tp, fp, fn, tn) per image; no-data pixels are left out."""
    prediction = (logits >= 0).long()[:, 0]  # sigmoid(logit) >= 0.5
    stats = smp.metrics.get_stats(prediction, target[:, 0].long(), mode="multiclass", num_classes=2,
                                  ignore_index=IGNORE_INDEX)
    return torch.stack([s[:, 1] for s in stats], dim=1)


def per_image_iou(stats: torch.Tensor) -> torch.Tensor:
    """[B] IoU of each image from its [B, 4] counts; images without water use the land IoU."""
    tp, fp, fn, tn = stats.double().unbind(1)
    water = tp / (tp + fp + fn).clamp_min(1)
    land = tn / (tn + fp + fn).clamp_min(1)
    return torch.where(tp + fn > 0, water, land)


def metrics_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Metrics from summed (tp, fp, fn, tn) counts [4]; an empty ratio (0/0) counts as 1 (a dry band
    predicted dry), but counts without any valid pixel give NaN: there is nothing to score."""
    if int(counts.sum()) == 0:
        return {name: math.nan for name in METRICS}
    tp, fp, fn, tn = (counts[i].reshape(1, 1) for i in range(4))
    # smp's micro reduction leaves 0/0 as NaN whatever zero_division says
    return {name: float(torch.nan_to_num(metric(tp, fp, fn, tn, reduction="micro"), nan=1.0))
            for name, metric in METRICS.items()}


class BandConfusion:
    """Accumulates confusion counts per band over a whole split."""

    def __init__(self, bands: Sequence[str]):
        self.bands = tuple(bands)
        self.counts = torch.zeros(len(self.bands), 4, dtype=torch.long)
        self.image_iou = torch.zeros(len(self.bands), 2, dtype=torch.float64)  # sum of per-image IoU, images

    def update(self, logits: torch.Tensor, target: torch.Tensor, band_index: torch.Tensor) -> None:
        stats = confusion_counts(logits.detach(), target).cpu()
        band_index = band_index.cpu()
        self.counts.index_add_(0, band_index, stats)
        scored = (stats.sum(1) > 0).double()  # an image without a valid pixel has no IoU of its own
        self.image_iou.index_add_(0, band_index, torch.stack([per_image_iou(stats) * scored, scored], 1))

    def scored_bands(self) -> list[str]:
        """The bands with at least one valid pixel; warns naming each band without."""
        empty = [band for i, band in enumerate(self.bands) if int(self.counts[i].sum()) == 0]
        if len(empty) == len(self.bands):
            raise DataError(f"no valid pixel in any validation band ({', '.join(self.bands)}): every label pixel is "
                            f"no-data or every image pixel NaN, so there is nothing to score; check the labels")
        for band in empty:
            warnings.warn(f"validation band {band} has no valid pixel (every label pixel no-data or every image "
                          f"pixel NaN): it has no score (NaN) and is left out of the mean", RuntimeWarning, stacklevel=3)
        return [band for band in self.bands if band not in empty]

    def compute(self) -> dict[str, float]:
        result: dict[str, float] = {}
        scored = self.scored_bands()
        per_band = {band: metrics_from_counts(self.counts[i]) for i, band in enumerate(self.bands)}
        for name in METRICS:
            for band in self.bands:
                result[f"{name}_{band}"] = per_band[band][name]
            result[name] = sum(per_band[band][name] for band in scored) / len(scored)
        for i, band in enumerate(self.bands):
            images = float(self.image_iou[i, 1])
            result[f"iou_per_image_{band}"] = float(self.image_iou[i, 0]) / images if images else math.nan
        result["iou_per_image"] = sum(result[f"iou_per_image_{b}"] for b in scored) / len(scored)
        return result
