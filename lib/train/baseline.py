"""Threshold baselines: what one value per band, or Otsu per image, gets on the data a model sees.

A flood mapper's default is a threshold on backscatter (VH < -20 dB, or Otsu per scene); a model is
only worth training if it beats that. `threshold_baseline(train_set, val_set, bands)` fits per band the
single threshold that maximizes dataset-wide IoU on the training split (value in the band's units,
e.g. dB, read from the files before normalization; polarity fitted too: water below the threshold in
VV, VH, B2-B4 and NDVI, above it in NDWI) and scores it on the validation split, and Otsu per image
beside it, with the metrics of lib/train/metrics.py. The result is what the engine prints and records in
summary.json and the checkpoint under "baseline":

    {"method": "threshold", "fitted_on": "train",
     "bands": {"VV": {"threshold": -14.2, "water_below": true, "fit_iou": ..., "iou": ..., "f1": ...,
                      "precision": ..., "recall": ..., "accuracy": ...}, ...},
     "iou": <mean over bands>,
     "otsu_per_image": {"bands": {"VV": {"iou": ..., ...}, ...}, "iou": <mean over bands>}}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from lib.data.bands import band_unit
from lib.data.dataset import IGNORE_INDEX, label_to_target, read_npy
from lib.train.metrics import metrics_from_counts

MAX_FIT_PIXELS = 2**25  # larger training splits are fitted on an even subsample (every k-th pixel)
FIT_BINS = 4096
OTSU_BINS = 256


@dataclass(frozen=True)
class Threshold:
    value: float
    water_below: bool

    def predict(self, values: np.ndarray) -> np.ndarray:
        return values < self.value if self.water_below else values > self.value

    def describe(self, band: str) -> str:
        unit = band_unit(band)
        return f"{band} {'<' if self.water_below else '>'} {self.value:.1f}{' ' + unit if unit else ''}"


# ------------------------------------------------------------------------------------------ pixels

def raw_images(dataset, band: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(raw values in band units, target uint8) per image of a dataset, before any normalization:
    BandPatchDataset's band files, or Kompsat5Dataset's whole scenes in dB."""
    if hasattr(dataset, "patches"):
        for _, band_files, label_path in dataset.patches:
            yield (read_npy(band_files[band], dataset.image_size).astype(np.float32, copy=False),
                   label_to_target(read_npy(label_path, dataset.image_size)))
    else:  # KOMPSAT-5 scenes: HH amplitude -> dB as training sees it (before the clip)
        from lib.data.kompsat5 import amplitude_to_db, mask_to_target, read_tiff
        for sample in dataset.samples:
            db, _ = amplitude_to_db(read_tiff(sample.image), dataset.calibration_db)
            yield db, mask_to_target(read_tiff(sample.mask))


def labelled(values: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite, labelled pixels as (values, water) 1-D arrays."""
    keep = (target != IGNORE_INDEX) & np.isfinite(values)
    return values[keep], target[keep] == 1


def has_band(dataset, band: str) -> bool:
    if hasattr(dataset, "patches"):
        return all(band in files for _, files, _ in dataset.patches)
    return hasattr(dataset, "samples") and band == "HH"


def pixel_count(dataset) -> int:
    if hasattr(dataset, "patches"):
        return len(dataset.patches) * (dataset.image_size or 256) ** 2
    return sum(height * width for height, width in dataset.sizes)


def training_pixels(dataset, band: str, limit: int = MAX_FIT_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels of every image (every k-th of them when the split holds more than `limit`)."""
    step = max(1, math.ceil(pixel_count(dataset) / limit))
    values, water = [], []
    for raw, target in raw_images(dataset, band):
        v, w = labelled(raw.ravel()[::step], target.ravel()[::step])
        values.append(v)
        water.append(w)
    return np.concatenate(values), np.concatenate(water)


# --------------------------------------------------------------------------------------------- fits

def iou_curves(water: np.ndarray, land: np.ndarray) -> dict[str, np.ndarray]:
    """Water IoU of a threshold at every edge, for each polarity, from per-bin class counts: count k holds
    edges[k-1] <= v < edges[k] (k = 0 below the first edge, the last one at or above the last edge)."""
    water_below = np.cumsum(water)[:-1].astype(np.float64)  # [i]: water values < edges[i]
    land_below = np.cumsum(land)[:-1].astype(np.float64)
    total_water, total_land = float(water.sum()), float(land.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        below = water_below / (total_water + land_below)                          # TP / (TP + FP + FN)
        above = (total_water - water_below) / (total_water + total_land - land_below)
    return {"below": np.nan_to_num(below), "above": np.nan_to_num(above)}


def fit_threshold(values: np.ndarray, water: np.ndarray, bins: int = FIT_BINS) -> tuple[Threshold, float]:
    """The threshold (and polarity) with the highest IoU of the water class over all pixels, and that IoU.

    Candidates are the edges of `bins` equal bins from the smallest to the largest value (1/4096 of the
    range: about 0.02 dB on real Sentinel-1 data), counted in one pass (np.bincount, no sort)."""
    values = np.asarray(values, dtype=np.float32).ravel()
    water = np.asarray(water, dtype=bool).ravel()
    if values.size == 0:
        raise ValueError("no labelled pixels to fit a threshold on")
    lo, hi = float(values.min()), float(values.max())
    width = (hi - lo) / bins if hi > lo else 1.0
    index = np.minimum(((values - np.float32(lo)) / np.float32(width)).astype(np.int64), bins - 1)
    none = np.zeros(1, np.int64)  # nothing below the first edge or above the last
    curves = iou_curves(np.concatenate([none, np.bincount(index[water], minlength=bins), none]),
                        np.concatenate([none, np.bincount(index[~water], minlength=bins), none]))
    iou_below, iou_above = curves["below"], curves["above"]
    edges = lo + width * np.arange(bins + 1)
    edges[0], edges[-1] = lo - width, hi + width  # everything above / below: strictly outside the data
    best_below, best_above = middle_of_best(iou_below), middle_of_best(iou_above)
    if iou_below[best_below] >= iou_above[best_above]:
        return Threshold(float(edges[best_below]), True), float(iou_below[best_below])
    return Threshold(float(edges[best_above]), False), float(iou_above[best_above])


def middle_of_best(scores: np.ndarray) -> int:
    """Index of the best score; of a run of equal best scores (empty bins in a gap), the middle one."""
    best = np.flatnonzero(scores == scores.max())
    return int(best[len(best) // 2])


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold (maximum between-class variance) on a `bins`-bin histogram of `values`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins, (lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)[:-1].astype(np.float64)
    weight1 = hist.sum() - weight0
    sum0 = np.cumsum(hist * centers)[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = weight0 * weight1 * (sum0 / weight0 - (np.sum(hist * centers) - sum0) / weight1) ** 2
    return float(edges[1:-1][int(np.nan_to_num(between, nan=-1.0).argmax())])


def counts(prediction: np.ndarray, water: np.ndarray) -> np.ndarray:
    """(tp, fp, fn, tn) of the water class."""
    tp = int(np.count_nonzero(prediction & water))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(water)) - tp
    return np.array([tp, fp, fn, len(water) - tp - fp - fn], dtype=np.int64)


def metrics(total: np.ndarray) -> dict[str, float]:
    return metrics_from_counts(torch.as_tensor(total))


def threshold_counts(dataset, band: str, threshold: Threshold) -> np.ndarray:
    """(tp, fp, fn, tn) of one threshold summed over every image of `dataset` in `band`."""
    total = np.zeros(4, np.int64)
    for raw, target in raw_images(dataset, band):
        values, water = labelled(raw, target)
        total += counts(threshold.predict(values), water)
    return total


def otsu_counts(dataset, band: str, water_below: bool) -> np.ndarray:
    """(tp, fp, fn, tn) of Otsu's threshold found anew on each image (polarity given), summed."""
    total = np.zeros(4, np.int64)
    for raw, target in raw_images(dataset, band):
        values, water = labelled(raw, target)
        if values.size:
            total += counts(Threshold(otsu_threshold(values), water_below).predict(values), water)
    return total


def score_threshold(dataset, band: str, threshold: Threshold) -> dict[str, float]:
    """Dataset-wide metrics of one threshold on every image of `dataset` in `band`."""
    return metrics(threshold_counts(dataset, band, threshold))


def score_otsu(dataset, band: str, water_below: bool) -> dict[str, float]:
    """Dataset-wide metrics of Otsu's threshold found anew on each image (polarity given)."""
    return metrics(otsu_counts(dataset, band, water_below))


# ------------------------------------------------------------------------------------------ summary

def fit_thresholds(dataset, bands: Sequence[str]) -> dict[str, tuple[Threshold, float]]:
    return {band: fit_threshold(*training_pixels(dataset, band)) for band in bands}


def baseline_record(thresholds: dict[str, tuple[Threshold, float]], dataset, fitted_on: str) -> dict:
    """The summary.json "baseline" entry: `thresholds` (band -> (threshold, fit IoU)) and Otsu per image,
    scored on `dataset`."""
    bands, otsu = {}, {}
    for band, (threshold, fit_iou) in thresholds.items():
        bands[band] = {"threshold": threshold.value, "water_below": threshold.water_below,
                       "fit_iou": fit_iou, **score_threshold(dataset, band, threshold)}
        otsu[band] = score_otsu(dataset, band, threshold.water_below)
    return {"method": "threshold", "fitted_on": fitted_on, "bands": bands,
            "iou": float(np.mean([m["iou"] for m in bands.values()])),
            "otsu_per_image": {"bands": otsu, "iou": float(np.mean([m["iou"] for m in otsu.values()]))}}


def recorded_thresholds(baseline: dict | None, bands: Sequence[str]) -> dict[str, tuple[Threshold, float]] | None:
    """band -> (threshold, fit IoU) from a recorded "baseline" entry, or None unless it covers every band."""
    entries = (baseline or {}).get("bands") or {}
    if not all(band in entries for band in bands):
        return None
    return {band: (Threshold(float(entries[band]["threshold"]), bool(entries[band]["water_below"])),
                   float(entries[band].get("fit_iou", float("nan")))) for band in bands}


def baseline_line(baseline: dict) -> str:
    thresholds = ", ".join(Threshold(b["threshold"], b["water_below"]).describe(band)
                           for band, b in baseline["bands"].items())
    ious = lambda entry: " ".join(f"{band} {m['iou']:.3f}" for band, m in entry["bands"].items())  # noqa: E731
    otsu = baseline["otsu_per_image"]
    return (f"threshold baseline ({thresholds}, fitted on {baseline['fitted_on']}): IoU {ious(baseline)} "
            f"mean {baseline['iou']:.3f}; Otsu per image: IoU {ious(otsu)} mean {otsu['iou']:.3f}")


def threshold_baseline(train_set, val_set, bands: Sequence[str], log=print) -> dict | None:
    """Fit per band on `train_set`, score on `val_set`, log one line; None (and a log line) when the
    training split lacks a validation band."""
    if not all(hasattr(d, "patches") or hasattr(d, "samples") for d in (train_set, val_set)):
        log(f"threshold baseline skipped: {type(train_set).__name__} does not expose its raw band files")
        return None
    missing = [band for band in bands if not has_band(train_set, band)]
    if missing:
        log(f"threshold baseline skipped: the training split has no {', '.join(missing)} files")
        return None
    baseline = baseline_record(fit_thresholds(train_set, bands), val_set, "train")
    log(baseline_line(baseline))
    return baseline

