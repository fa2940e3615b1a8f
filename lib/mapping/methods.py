"""What maps the water of a scene (--method): the model, a per-scene threshold on the backscatter, or both.

    model      the checkpoint's network
    threshold  water below a threshold in dB fitted on this scene: Otsu's split of the pixels of the tiles
               that straddle the land/water edge (split-based thresholding, Martinis et al. 2015, as in
               GFM's threshold algorithm: a whole-scene histogram is rarely bimodal when water is a few per
               cent of it), kept only when the split is bimodal (Otsu's separability, the between-class share
               of the variance, >= MIN_SEPARABILITY: a split of one Gaussian gives 2/pi = 0.64, water at
               -22 +- 2 dB against land at -10 +- 3 dB about 0.9; and each side at least MIN_CLASS_SHARE of the
               tiles' pixels); otherwise the threshold fitted on the training
               split and recorded in the checkpoint ("baseline", lib/train/baseline.py)
    ensemble   the mean of the model's probability and the threshold's (a logistic of the distance to the
               threshold, SOFTNESS_DB wide): where they agree nothing changes, where they disagree the more
               confident of the two decides

The threshold and ensemble methods are modules over the engine's normalized input (lib/mapping/tiling.py
runs them like the model), so every product, the pre-event pass and the polygons work unchanged. They map
one band (VV, VH or HH, in dB); the pre-event scene is mapped with the post-event scene's threshold. With
a stacked checkpoint (INPUT_BANDS) the threshold is on one of its bands (options.backscatter_band: VH when
there, or --threshold-band) and the ensemble averages it with the model on every band.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lib.data.bands import band_range, band_unit
from lib.errors import InferenceError
from lib.train.baseline import otsu_threshold

METHODS = ("model", "threshold", "ensemble")
EDGE_TILE = 32            # tiles of the decimated sample (long side <= 512), for the split
EDGE_TILES = 0.1          # the share of tiles (the most varied of those with both classes) that are pooled
MIN_EDGE_TILES = 5
MIN_SEPARABILITY = 0.75   # between-class / total variance of the split (one Gaussian split in two: 0.64)
MIN_CLASS_SHARE = 0.1
SOFTNESS_DB = 1.0         # the threshold's probability: sigmoid((threshold - dB) / SOFTNESS_DB)


def check_method(method: str, bands: list[str]) -> None:
    if method not in METHODS:
        raise InferenceError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "model" and (len(bands) != 1 or band_unit(bands[0]) != "dB"):
        raise InferenceError(f"--method {method} maps one backscatter band in dB (VV, VH or HH), "
                             f"got --band {','.join(bands)}")


def separability(low: np.ndarray, high: np.ndarray) -> float:
    """Otsu's eta: the between-class variance of a split over the total variance (1: two spikes)."""
    both = np.concatenate([low, high])
    total = float(both.var())
    if total <= 0 or not low.size or not high.size:
        return 0.0
    share = low.size / both.size
    return float(share * (1 - share) * (high.mean() - low.mean()) ** 2 / total)


def edge_tile_pixels(db: np.ndarray, first_split: float, tile: int = EDGE_TILE) -> np.ndarray:
    """The valid pixels of the tiles with both classes of `first_split` (at least MIN_CLASS_SHARE each),
    the EDGE_TILES most varied of them (at least MIN_EDGE_TILES); empty when none has both."""
    chosen = []
    for r in range(0, db.shape[0], tile):
        for c in range(0, db.shape[1], tile):
            values = db[r:r + tile, c:c + tile]
            values = values[np.isfinite(values)]
            if values.size < tile * tile // 2:
                continue
            water = float((values < first_split).mean())
            if MIN_CLASS_SHARE <= water <= 1 - MIN_CLASS_SHARE:
                chosen.append((float(values.std()), values))
    if not chosen:
        return np.empty(0, np.float32)
    chosen.sort(key=lambda item: -item[0])
    keep = max(MIN_EDGE_TILES, int(round(EDGE_TILES * len(chosen))))
    return np.concatenate([values for _, values in chosen[:keep]])


def scene_threshold(db: np.ndarray) -> dict:
    """The split-based Otsu threshold of a decimated scene in dB and its bimodality test:
    {"threshold_db", "bimodal", "separability", "water_share", "pixels"}."""
    valid = db[np.isfinite(db)]
    if valid.size < EDGE_TILE * EDGE_TILE:
        return {"threshold_db": None, "bimodal": False, "separability": None, "water_share": None,
                "pixels": int(valid.size)}
    pixels = edge_tile_pixels(db, otsu_threshold(valid))
    if pixels.size == 0:
        return {"threshold_db": None, "bimodal": False, "separability": None, "water_share": None, "pixels": 0}
    split = otsu_threshold(pixels)
    low, high = pixels[pixels < split], pixels[pixels >= split]
    share = low.size / pixels.size
    eta = separability(low, high)
    bimodal = eta >= MIN_SEPARABILITY and MIN_CLASS_SHARE <= share <= 1 - MIN_CLASS_SHARE
    return {"threshold_db": split, "bimodal": bool(bimodal), "separability": eta, "water_share": share,
            "pixels": int(pixels.size)}


def choose_threshold(db_sample: np.ndarray, band: str, baseline: dict | None, checkpoint: str) -> dict:
    """The scene's threshold when bimodal, else the checkpoint's training-fitted one (an error without it)."""
    fit = scene_threshold(db_sample)
    if fit["bimodal"]:
        return {**fit, "source": "scene"}
    entry = ((baseline or {}).get("bands") or {}).get(band)
    if entry is None:
        raise InferenceError(f"--method threshold: the scene's {band} histogram is not bimodal and {checkpoint} "
                             f"records no training-fitted {band} threshold (its 'baseline'); use --method model")
    if not entry.get("water_below", True):
        raise InferenceError(f"{checkpoint}: its recorded {band} threshold has water above it; not a SAR band")
    return {**fit, "threshold_db": float(entry["threshold"]), "source": "checkpoint"}


class ThresholdModel(nn.Module):
    """Logits of water below `threshold_db`, from the engine's normalized input of `band` (input channel
    `channel`: a stacked model's input holds every band)."""

    def __init__(self, threshold_db: float, band: str, normalization: dict, channel: int = 0):
        super().__init__()
        self.channel = channel
        lo, hi = band_range(band, normalization)
        self.register_buffer("level", torch.tensor((threshold_db - lo) / (hi - lo), dtype=torch.float32))
        self.register_buffer("scale", torch.tensor((hi - lo) / SOFTNESS_DB, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, self.channel:self.channel + 1] if x.ndim == 4 else x  # a [N, C, H, W] batch: the band's channel
        return (self.level - x.float()) * self.scale


class EnsembleModel(nn.Module):
    """Logit of the mean of the model's and the threshold's probabilities."""

    def __init__(self, model, threshold: ThresholdModel):
        super().__init__()
        self.model, self.threshold = model, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = (torch.sigmoid(self.model(x).float()) + torch.sigmoid(self.threshold(x))) / 2
        return torch.logit(mean, eps=1e-6)


def scene_mapper(method: str, model, db_sample: np.ndarray | None, band: str, data: dict, baseline: dict | None,
                 checkpoint: str, channel: int = 0) -> tuple[object, dict]:
    """(what the engine runs, the summary's "method" block) for one scene; channel: the band's input channel
    (a stacked model's)."""
    if method == "model":
        return model, {"name": "model"}
    chosen = choose_threshold(db_sample, band, baseline, checkpoint)
    threshold = ThresholdModel(chosen["threshold_db"], band, data["normalization"], channel)
    record = {"name": method, "band": band, **chosen}
    return (threshold if method == "threshold" else EnsembleModel(model, threshold)), record
