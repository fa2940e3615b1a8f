"""Whole-scene inference as a function of arrays: tiled, overlapping, blended, in bounded memory.

`predict_tiled` walks a scene of any size in horizontal strips of one tile row. Each strip is read from a
*reader* (rows [row0, row1) as raw values, NaN no-data), preprocessed as in training, cut into overlapping
tiles (the last tile of a row or column is aligned to the scene edge; a scene smaller than one tile is
reflect-padded), run through the model in batches, and the tiles' water probabilities are accumulated
with a blending window (flat in the middle, a linear ramp over the overlap) and divided by the
accumulated weight, so neighbouring tiles fade into each other without seams. Rows that no later tile
touches are finished and handed to a *sink*; only one strip of accumulators (tile x width) is ever held,
so memory does not grow with the scene's height (a 20000 x 20000 scene needs a few hundred MiB).
Readers and writers of files: lib/mapping/rasters.py; sinks: lib/mapping/sinks.py.

Several bands (VV and VH of a band-agnostic model): the model runs on each band and the blended
probabilities are fused per pixel (`fuse_bands`: mean of the bands with data there, or max). A model
trained with the bands stacked as input channels (INPUT_BANDS, `stacked`) gets them at once, [N, C, tile,
tile], each band normalized with its own range, and gives one probability, no-data where any band is. Test-time
augmentation (`tta` "flip": 4 views, "d4": 8): every tile is also run flipped / rotated, mapped back and
averaged; the spread over views and bands is the per-pixel uncertainty.

Models whose token MLP ties them to one input size (PSPMixer) need tile == the checkpoint's
image_size; every other model takes any tile its strides divide (`check_tile`, one empty pass).
On CPU, `lib.runtime.keep_freed_memory()` (predict.py calls it) makes batched inference 2-4x faster by
letting glibc reuse freed activation memory.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.errors import InferenceError
from lib.runtime import autocast


class Reader(Protocol):
    height: int
    width: int

    def read(self, row0: int, row1: int) -> np.ndarray:
        """Rows [row0, row1) as float32 raw values, [rows, width] or [bands, rows, width]; no-data as NaN."""


class Sink(Protocol):
    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        """Finished rows: blended water probability (float32) and the input's no-data mask (and the
        `uncertainty` std when predict_tiled is asked for it; the rows the engine read, `raw`, and their
        model input, `images`, with `hand_rows`)."""


# ----------------------------------------------------------------------------------------- geometry

def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles along an axis: every `tile - overlap` pixels, the last one aligned to the
    end (so no tile hangs over the edge); a single tile at 0 when the axis is not longer than a tile."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise InferenceError(f"need tile > 0 and 0 <= overlap < tile, got tile {tile}, overlap {overlap}")
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile, tile - overlap))
    return origins + [length - tile]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """[tile, tile] float32 weights: 1 in the middle, a linear ramp from about 1/(2*overlap) up to 1 over
    the `overlap` pixels at each side (the product of two 1-D ramps). Two tiles overlapping by exactly
    `overlap` have weights that sum to 1; the weight never reaches 0, so every pixel has some."""
    index = np.arange(tile, dtype=np.float64) + 0.5
    if overlap > 0:
        ramp = np.minimum(1.0, np.minimum(index, tile - index) / overlap)
    else:
        ramp = np.ones(tile)
    return np.outer(ramp, ramp).astype(np.float32)


def pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad a 2-D array at the bottom/right up to (height, width) (edge mode for 1-pixel sides)."""
    pad_h, pad_w = max(0, height - array.shape[0]), max(0, width - array.shape[1])
    if not pad_h and not pad_w:
        return array
    mode = "reflect" if min(array.shape) > 1 else "edge"
    return np.pad(array, ((0, pad_h), (0, pad_w)), mode=mode)


def check_tile(model: nn.Module, tile: int, device: torch.device, channels: int = 1) -> None:
    """One dummy forward pass at the tile size, so a tile the model cannot take fails with a clear
    message before any work (PSPMixer needs its image_size; smp models need multiples of their stride);
    channels: the input channels (a stacked model's bands)."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, channels, tile, tile, device=device))
    except Exception as error:  # noqa: BLE001 - every model reports its own constraint
        raise InferenceError(f"the model cannot run on {tile}x{tile} tiles: {error}. "
                             f"Use --tile with a size it accepts (the checkpoint's image_size always works)") from None
    if tuple(out.shape[-2:]) != (tile, tile) or out.shape[1] != 1:
        raise InferenceError(f"the model maps a {tile}x{tile} tile to shape {tuple(out.shape)}; "
                             f"expected one logit channel at the input size")


TTA = ("none", "flip", "d4")
FUSE = ("mean", "max")


def tta_views(tta: str) -> list[tuple[int, tuple[int, ...]]]:
    """Views of a square tile as (quarter turns, flipped dims): none 1, flip 4 (identity, left-right,
    up-down, both), d4 8 (the four rotations, each also mirrored)."""
    if tta not in TTA:
        raise InferenceError(f"--tta must be one of {', '.join(TTA)}, got {tta!r}")
    if tta == "none":
        return [(0, ())]
    if tta == "flip":
        return [(0, ()), (0, (3,)), (0, (2,)), (0, (2, 3))]
    return [(k, flip) for k in range(4) for flip in ((), (3,))]


def view_forward(x: torch.Tensor, view: tuple) -> torch.Tensor:
    turns, dims = view
    x = torch.flip(x, dims) if dims else x
    return torch.rot90(x, turns, (2, 3)) if turns else x


def view_inverse(y: torch.Tensor, view: tuple) -> torch.Tensor:
    turns, dims = view
    y = torch.rot90(y, -turns, (2, 3)) if turns else y
    return torch.flip(y, dims) if dims else y


def fuse_bands(probability: np.ndarray, variance: np.ndarray | None, invalid: np.ndarray, fuse: str = "mean"):
    """[bands, rows, width] blended probabilities (and TTA variances) of one scene -> (fused probability,
    invalid, std). Bands with no data at a pixel take no part there (a blank band leaves the other);
    a pixel is invalid only where every band is. std: over every TTA view of every valid band (the
    within-band variance plus the spread of the band means), 0 with one band and no TTA."""
    valid = ~invalid
    count = valid.sum(axis=0)
    fused_invalid = count == 0
    share = np.where(valid, 1.0 / np.maximum(count, 1), 0.0).astype(np.float32)
    mean = (probability * share).sum(axis=0)
    if fuse == "max":
        fused = np.where(valid, probability, 0.0).max(axis=0)
    else:
        fused = mean
    spread = (((probability - mean) ** 2 + (0.0 if variance is None else variance)) * share).sum(axis=0)
    std = np.sqrt(spread)
    return fused.astype(np.float32), fused_invalid, std.astype(np.float32)


# -------------------------------------------------------------------------------------------- engine

class StageClock:
    """Seconds spent per stage of the engine (read, normalize, inference, blend, sinks: writing and every
    product made from the rows), by laps: each lap charges the time since the last one to its stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str, value=None):
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now
        return value


class StripBlender:
    """Accumulators of one strip of tile rows ([bands, tile, width]): blended probabilities, TTA variances
    (optional) and blending weights; finished rows are taken from the top and the rest moved up."""

    def __init__(self, n_bands: int, tile: int, width: int, overlap: int, with_variance: bool):
        self.tile, self.width, self.window = tile, width, blend_window(tile, overlap)
        self.probability = np.zeros((n_bands, tile, width), np.float32)  # rows [origin, origin + tile)
        self.variance = np.zeros((n_bands, tile, width), np.float32) if with_variance else None
        self.weight = np.zeros((tile, width), np.float32)

    def add(self, mean: np.ndarray, variance: np.ndarray | None, cols: list[int], rows: int) -> None:
        """[bands, len(cols), tile, tile] probabilities (and variances) of the tiles at `cols`; `rows`
        of them lie inside the scene."""
        for i, col0 in enumerate(cols):
            w = min(self.tile, self.width - col0)
            weights = self.window[:rows, :w]
            self.probability[:, :rows, col0:col0 + w] += mean[:, i, :rows, :w] * weights
            if self.variance is not None:
                self.variance[:, :rows, col0:col0 + w] += variance[:, i, :rows, :w] * weights
            self.weight[:rows, col0:col0 + w] += weights

    def take(self, done: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(probability, variance) of the first `done` rows, which no later tile touches; the rows the
        next tile row overlaps move to the top."""
        probability = self.probability[:, :done] / self.weight[:done]
        variance = None if self.variance is None else self.variance[:, :done] / self.weight[:done]
        for accumulator in (self.probability, self.variance):
            if accumulator is not None:
                accumulator[:, :self.tile - done] = accumulator[:, done:].copy()
                accumulator[:, self.tile - done:] = 0.0
        self.weight[:self.tile - done] = self.weight[done:].copy()
        self.weight[self.tile - done:] = 0.0
        return probability, variance


def preprocess_strip(raw: np.ndarray, preprocessors: list) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw rows ([rows, width] or [bands, rows, width]) -> (model input of each band, [bands, rows, width]
    no-data mask)."""
    raw = raw[None] if raw.ndim == 2 else raw
    if len(raw) != len(preprocessors):
        raise InferenceError(f"the reader gives {len(raw)} bands, {len(preprocessors)} preprocessings were given")
    images, invalids = zip(*(prep(band) for prep, band in zip(preprocessors, raw)))
    return list(images), np.stack(invalids)


def hand_over(sink: Sink, row0: int, probability: np.ndarray, variance: np.ndarray | None, invalid: np.ndarray,
              fuse: str, uncertainty: bool, rows: dict | None = None) -> None:
    """Finished rows to the sink: one band as it is, several fused (with the std when asked); `rows`
    (raw, images), when given, go along as keywords."""
    extra = dict(rows or {})
    if len(probability) == 1 and not uncertainty:
        sink.write(row0, probability[0], invalid[0], **extra)
        return
    fused, fused_invalid, std = fuse_bands(probability, variance, invalid, fuse)
    if uncertainty:
        extra["uncertainty"] = std
    sink.write(row0, fused, fused_invalid, **extra)


@torch.inference_mode()
def predict_tiled(model: nn.Module, reader: Reader, sink: Sink, preprocess: Callable | list, *, tile: int = 256,
                  overlap: int = 64, batch_size: int = 8, device: str | torch.device = "cpu",
                  progress: bool = True, precision: str = "fp32", tta: str = "none", fuse: str = "mean",
                  uncertainty: bool = False, check: bool = True, hand_rows: bool = False,
                  stacked: bool = False) -> dict:
    """Run `model` over the whole scene of `reader`, tile by tile, and hand finished rows to `sink`
    top to bottom. A reader of several bands (polarisations) runs the model on each band, with that
    band's `preprocess` (a list, one per band), and fuses their probabilities (`fuse`: mean or max).
    tta: "none", "flip" or "d4": probabilities averaged over the views of each tile. uncertainty: also
    hand the sink the per-pixel std across the views and bands (`sink.write(..., uncertainty=std)`).
    precision: "fp32", or "bf16"/"fp16" autocast (lib.runtime.autocast); the blending is float32 either
    way. check: run `check_tile` first (False when the caller has). hand_rows: also hand the sink the rows
    it read (`raw=` [bands, rows, width]) and their model input (`images=`, one [rows, width] per band),
    so that products made from the backscatter need not read the scene again. stacked: the bands are the
    model's input channels (one pass, one probability; `fuse` unused). Returns {height, width, tiles,
    seconds}."""
    device = torch.device(device)
    height, width = reader.height, reader.width
    if height < 1 or width < 1:
        raise InferenceError(f"empty scene ({height} x {width})")
    if batch_size < 1:
        raise InferenceError(f"batch size must be at least 1, got {batch_size}")
    if fuse not in FUSE:
        raise InferenceError(f"--fuse must be one of {', '.join(FUSE)}, got {fuse!r}")
    views = tta_views(tta)
    preprocessors = list(preprocess) if isinstance(preprocess, (list, tuple)) else [preprocess]
    if check:
        check_tile(model, tile, device, len(preprocessors) if stacked else 1)
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    outputs = 1 if stacked else len(preprocessors)  # probabilities per pixel before fusion
    blender = StripBlender(outputs, tile, width, overlap, uncertainty and len(views) > 1)
    cols_per_batch = max(1, batch_size // outputs)
    started = time.perf_counter()
    bar = tqdm(total=len(rows) * len(cols), desc="tiles", unit="tile", disable=None if progress else True,
               mininterval=1.0, smoothing=0.1)
    clock = StageClock()
    for index, row0 in enumerate(rows):
        row1 = min(row0 + tile, height)
        raw = clock.lap("read", reader.read(row0, row1))
        images, invalid = preprocess_strip(raw, preprocessors)
        invalid = invalid.any(axis=0, keepdims=True) if stacked else invalid
        strips = clock.lap("normalize", [pad_to(image, tile, max(width, tile)) for image in images])
        for start in range(0, len(cols), cols_per_batch):
            batch_cols = cols[start:start + cols_per_batch]
            batch = torch.from_numpy(tile_batch(strips, batch_cols, tile, stacked))
            mean, variance = clock.lap("inference", tta_probabilities(model, batch.to(device), views, device,
                                                                      precision, blender.variance is not None))
            shape = (outputs, len(batch_cols), tile, tile)
            blender.add(mean.reshape(shape), None if variance is None else variance.reshape(shape), batch_cols,
                        row1 - row0)
            clock.lap("blend")
            bar.update(len(batch_cols))
        done = (rows[index + 1] if index + 1 < len(rows) else height) - row0  # rows no later tile touches
        taken = clock.lap("blend", blender.take(done))
        rows_read = {"raw": (raw[None] if raw.ndim == 2 else raw)[:, :done],
                     "images": [image[:done] for image in images]} if hand_rows else None
        hand_over(sink, row0, *taken, invalid[:, :done], fuse, uncertainty, rows_read)
        clock.lap("sinks")
    bar.close()
    return {"height": height, "width": width, "tiles": len(rows) * len(cols), "bands": len(preprocessors),
            "tta_views": len(views), "seconds": time.perf_counter() - started, "stages_s": clock.seconds}


def tile_batch(strips: list[np.ndarray], cols: list[int], tile: int, stacked: bool) -> np.ndarray:
    """The model input of the tiles at `cols` of a strip: stacked [cols, bands, tile, tile]; else one band per
    item, band-major [bands x cols, 1, tile, tile]."""
    if stacked:
        return np.stack([np.stack([s[:, c:c + tile] for s in strips]) for c in cols])
    return np.stack([s[:, c:c + tile] for s in strips for c in cols])[:, None]


def tta_probabilities(model: nn.Module, batch: torch.Tensor, views: list, device: torch.device,
                      precision: str, with_variance: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean (and, with_variance, variance) over the TTA views of the water probabilities of a
    [N, C, tile, tile] batch, each view mapped back to the tile's orientation: [N, tile, tile] float32."""
    total, each = None, []
    for view in views:
        with autocast(device, precision):
            logits = model(view_forward(batch, view))
        probability = view_inverse(torch.sigmoid(logits.float()), view)[:, 0]
        total = probability if total is None else total + probability
        if with_variance:
            each.append(probability)
    mean = total / len(views)
    if not with_variance:
        return mean.cpu().numpy(), None
    # the spread about the mean (not E[p^2] - E[p]^2, which cancels to float32 noise)
    variance = sum((p - mean) ** 2 for p in each) / len(views)
    return mean.cpu().numpy(), variance.cpu().numpy()
