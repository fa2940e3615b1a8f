"""The best single threshold on one band, from class histograms: how separable water is before any model.

Counts come as `np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)`, so
count k holds edges[k-1] <= v < edges[k] (k = 0 below the first edge, the last one at or above the last
edge), and the number of values below a candidate threshold edges[i] is exactly cumsum(counts)[i].
Candidates are the edges; polarity "below" calls water where band < t (SAR backscatter: water is dark),
"above" where band >= t (NDWI: water is bright). Fit on train, score on val with `threshold_iou`.
"""
from __future__ import annotations

import numpy as np

from lib.train.baseline import iou_curves  # the same curves the training baseline fits on


def fit_threshold(water: np.ndarray, land: np.ndarray, edges: np.ndarray) -> dict | None:
    """{"threshold", "index", "polarity", "iou"} maximizing the water IoU on these counts (the middle edge
    of the best run, so the threshold sits between the classes, not on one of them); None without water."""
    if water.sum() == 0:
        return None
    best = None
    for polarity, curve in iou_curves(water, land).items():
        top = curve.max()
        first = int(np.argmax(curve))
        last = first + int(np.argmin(curve[first:] == top)) - 1 if (curve[first:] != top).any() else len(curve) - 1
        if best is None or top > best["iou"]:
            index = (first + last) // 2
            best = {"threshold": float(edges[index]), "index": index, "polarity": polarity, "iou": float(top)}
    return best


def threshold_iou(water: np.ndarray, land: np.ndarray, fit: dict) -> float | None:
    """Water IoU of a fitted threshold on other counts over the same edges (None if they hold no pixel)."""
    if water.sum() + land.sum() == 0:
        return None
    return float(iou_curves(water, land)[fit["polarity"]][fit["index"]])
