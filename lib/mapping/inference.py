"""Whole-scene inference: tiled, overlapping, blended, in bounded memory.

    summary = predict_file(model, checkpoint["data"], "scene.tif", "mask.tif")
    summary = predict_file(model, checkpoint["data"], "s1.tif", "mask.tif", band="VV,VH", raster_band=[1, 2],
                           tta="d4")

The engine (`predict_tiled`) walks a scene of any size in horizontal strips of one tile row. Each strip
is read from a *reader*, normalized as in training (lib/data/bands.py), cut into overlapping tiles (the last
tile of a row or column is aligned to the scene edge; a scene smaller than one tile is reflect-padded),
run through the model in batches, and the tiles' water probabilities are accumulated with a blending
window (flat in the middle, a linear ramp over the overlap) and divided by the accumulated weight, so
neighbouring tiles fade into each other without seams. Rows that no later tile touches are finished and
handed to a *sink*; only one strip of accumulators (tile x width) is ever held, so memory does not grow
with the scene's height (a 20000 x 20000 scene needs a few hundred MiB).

Readers: `ArrayReader` (a numpy array or memory-mapped .npy), `RasterReader` (bands of a rasterio
dataset or WarpedVRT, read by windows), `StackReader` (one file per band). Sinks: `MaskSink` (thresholded
uint8 mask 1 water / 0 not water / 255 no-data and optionally float32 probabilities) over writers
`ArrayWriter` / `RasterWriter` (rasterio windows, whole block rows at a time); the flood products'
sinks are in lib/mapping/.

Several bands (VV and VH of a band-agnostic model): the model runs on each band and the blended
probabilities are fused per pixel (`fuse_bands`: mean of the bands with data there, or max). Test-time
augmentation (`tta` "flip": 4 views, "d4": 8): every tile is also run flipped / rotated, mapped back and
averaged; the spread over views and bands is the per-pixel uncertainty.

Models whose token MLP ties them to one input size (PSPMixer) need tile == the checkpoint's
image_size; every other model takes any tile its strides divide.

Input units: dB (default), linear power (10*log10 first) or KOMPSAT-5 amplitude DN (20*log10(DN) +
calibration, the default for kompsat5 checkpoints). On CPU, `lib.runtime.keep_freed_memory()` (predict.py calls it)
makes batched inference 2-4x faster by letting glibc reuse freed activation memory.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.data.bands import normalize
from lib.errors import InferenceError
from lib.runtime import autocast

NODATA = 255                      # no-data value of the mask
MASK_BLOCK = 256                  # GeoTIFF block size of the outputs
GDAL_CACHE_MB = 128               # GDAL's block cache (its default, 5% of RAM, would count as "our" memory)
QUICKLOOK_SIDE = 1024             # long side of the quick-look PNG, at most


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


# ------------------------------------------------------------------------------------------ readers

class Reader(Protocol):
    height: int
    width: int

    def read(self, row0: int, row1: int) -> np.ndarray:
        """Rows [row0, row1) as float32 raw values, [rows, width] or [bands, rows, width]; no-data as NaN."""


def band_list(bands) -> tuple[list[int], bool]:
    """(1-based band numbers, whether one band was asked for as a plain int)."""
    if isinstance(bands, (int, np.integer)):
        return [int(bands)], True
    return [int(b) for b in bands], False


class ArrayReader:
    """A 2-D numpy array, or bands of a [bands, height, width] one (memory maps of .npy files are read a
    strip at a time). `band` (1-based, an int or a list) picks bands of a 3-D array."""

    def __init__(self, array: np.ndarray, nodata: float | None = None, band=1):
        if array.ndim not in (2, 3):
            raise InferenceError(f"expected a 2-D array or a [bands, height, width] one, "
                                 f"got shape {tuple(array.shape)}")
        self.bands, self.single = band_list(band)
        count = 1 if array.ndim == 2 else array.shape[0]
        if any(not 1 <= b <= count for b in self.bands):
            raise InferenceError(f"band {','.join(map(str, self.bands))} requested, the array has {count}")
        self.array, self.nodata = array, nodata
        self.height, self.width = array.shape[-2:]

    def _band(self, band: int, row0: int, row1: int) -> np.ndarray:
        raw = self.array[row0:row1] if self.array.ndim == 2 else self.array[band - 1, row0:row1]
        rows = np.array(raw, dtype=np.float32)
        if self.nodata is not None and np.isfinite(self.nodata):
            rows[raw == self.nodata] = np.nan
        return rows

    def read(self, row0: int, row1: int) -> np.ndarray:
        stack = [self._band(b, row0, row1) for b in self.bands]
        return stack[0] if self.single else np.stack(stack)


class RasterReader:
    """Bands of an open rasterio dataset (or WarpedVRT), read by windows; the nodata value becomes NaN.
    `band` is 1-based, an int (reads [rows, width]) or a list (reads [bands, rows, width])."""

    def __init__(self, dataset, band=1):
        self.bands, self.single = band_list(band)
        for b in self.bands:
            if not 1 <= b <= dataset.count:
                raise InferenceError(f"{dataset.name}: band {b} requested, the raster has {dataset.count}")
        self.dataset = dataset
        self.height, self.width = dataset.height, dataset.width

    def read(self, row0: int, row1: int) -> np.ndarray:
        from rasterio.windows import Window
        raw = self.dataset.read(self.bands, window=Window(0, row0, self.width, row1 - row0))
        rows = raw.astype(np.float32, copy=True)
        for index, band in enumerate(self.bands):
            nodata = self.dataset.nodatavals[band - 1]
            if nodata is not None and not np.isnan(nodata):
                rows[index][raw[index] == nodata] = np.nan
        return rows[0] if self.single else rows


class StackReader:
    """Several single-band readers of one grid (a scene's polarisations in separate files) as one
    [bands, rows, width] reader."""

    def __init__(self, readers: list):
        shapes = {(r.height, r.width) for r in readers}
        if len(shapes) != 1:
            raise InferenceError(f"the band files differ in size: {sorted(shapes)}; they must share one grid")
        self.readers = readers
        self.height, self.width = readers[0].height, readers[0].width

    def read(self, row0: int, row1: int) -> np.ndarray:
        return np.stack([r.read(row0, row1) for r in self.readers])


UNITS = ("db", "linear", "amplitude")


def default_units(data: dict) -> str:
    """KOMPSAT-5 checkpoints are trained on amplitude digital numbers; every other one on dB."""
    return "amplitude" if data.get("format") == "kompsat5" else "db"


def make_preprocess(band: str, normalization: dict, units: str = "db",
                    calibration_db: float = 0.0) -> Callable[[np.ndarray], tuple]:
    """raw rows -> (image float32 in [0, 1], invalid bool), as in training: linear power becomes
    10*log10(power), amplitude (KOMPSAT-5 DN) 20*log10(DN) + calibration_db (lib/data/kompsat5/), then
    clip-and-scale with the checkpoint's range for `band`. NaN/inf, and power or amplitude <= 0, are invalid."""
    if units not in UNITS:
        raise InferenceError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    if band not in normalization:
        raise InferenceError(f"band {band!r} has no normalization range in the checkpoint "
                             f"(it knows {', '.join(normalization)}); pass --band with one of those")

    def preprocess(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if units == "linear":
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = 10.0 * np.log10(raw)
        elif units == "amplitude":
            from lib.data.kompsat5 import amplitude_to_db
            raw, _ = amplitude_to_db(raw, calibration_db)
        return normalize(raw, band, normalization)
    return preprocess


# ------------------------------------------------------------------------------------ writers / sinks

class ArrayWriter:
    """Writes rows into a numpy array (in memory, or a .npy memory map from np.lib.format.open_memmap)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def write(self, row0: int, rows: np.ndarray) -> None:
        self.array[row0:row0 + len(rows)] = rows

    def close(self) -> None:
        if hasattr(self.array, "flush"):
            self.array.flush()


class RasterWriter:
    """Writes rows into band 1 of an open rasterio dataset. Rows are buffered and written a whole block
    row at a time, so a compressed, tiled GeoTIFF gets every block exactly once."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.block = dataset.block_shapes[0][0]
        self.pending: list[np.ndarray] = []
        self.start = 0        # first row of the pending buffer
        self.count = 0        # rows pending

    def write(self, row0: int, rows: np.ndarray) -> None:
        if row0 != self.start + self.count:
            raise RuntimeError(f"rows must arrive in order: expected row {self.start + self.count}, got {row0}")
        self.pending.append(np.asarray(rows))
        self.count += len(rows)
        if self.count >= self.block:
            self._flush(self.count - self.count % self.block)

    def _flush(self, n: int) -> None:
        from rasterio.windows import Window
        if n <= 0:
            return
        buffer = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.dataset.write(buffer[:n], 1, window=Window(0, self.start, self.dataset.width, n))
        rest = buffer[n:]
        self.pending = [rest] if len(rest) else []
        self.start += n
        self.count -= n

    def close(self) -> None:
        self._flush(self.count)


class Sink(Protocol):
    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        """Finished rows: blended water probability (float32) and the input's no-data mask (and the
        `uncertainty` std when predict_tiled is asked for it)."""


class MaskSink:
    """Thresholds probabilities into the uint8 mask (1 water, 0 not water, 255 no-data) and, with
    `probability` given, writes the float32 probabilities too (NaN where the input has no data)."""

    def __init__(self, mask, probability=None, threshold: float = 0.5):
        self.mask, self.probability, self.threshold = mask, probability, threshold
        self.water = self.valid = 0

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        mask = (probability >= self.threshold).astype(np.uint8)
        mask[invalid] = NODATA
        self.water += int((mask == 1).sum())
        self.valid += int(mask.size - invalid.sum())
        self.mask.write(row0, mask)
        if self.probability is not None:
            probability = probability.astype(np.float32, copy=True)
            probability[invalid] = np.nan
            self.probability.write(row0, probability)

    def close(self) -> None:
        self.mask.close()
        if self.probability is not None:
            self.probability.close()


# -------------------------------------------------------------------------------------------- engine

def check_tile(model: nn.Module, tile: int, device: torch.device) -> None:
    """One dummy forward pass at the tile size, so a tile the model cannot take fails with a clear
    message before any work (PSPMixer needs its image_size; smp models need multiples of their stride)."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 1, tile, tile, device=device))
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


@torch.inference_mode()
def predict_tiled(model: nn.Module, reader: Reader, sink: Sink, preprocess: Callable | list, *, tile: int = 256,
                  overlap: int = 64, batch_size: int = 8, device: str | torch.device = "cpu",
                  progress: bool = True, precision: str = "fp32", tta: str = "none", fuse: str = "mean",
                  uncertainty: bool = False) -> dict:
    """Run `model` over the whole scene of `reader`, tile by tile, and hand finished rows to `sink`
    top to bottom. A reader of several bands (polarisations) runs the model on each band, with that
    band's `preprocess` (a list, one per band), and fuses their probabilities (`fuse`: mean or max).
    tta: "none", "flip" or "d4": probabilities averaged over the views of each tile. uncertainty: also
    hand the sink the per-pixel std across the views and bands (`sink.write(..., uncertainty=std)`).
    precision: "fp32", or "bf16"/"fp16" autocast (lib.runtime.autocast); the blending is float32 either
    way. Returns {height, width, tiles, seconds}."""
    device = torch.device(device)
    height, width = reader.height, reader.width
    if height < 1 or width < 1:
        raise InferenceError(f"empty scene ({height} x {width})")
    if batch_size < 1:
        raise InferenceError(f"batch size must be at least 1, got {batch_size}")
    if fuse not in FUSE:
        raise InferenceError(f"--fuse must be one of {', '.join(FUSE)}, got {fuse!r}")
    views = tta_views(tta)
    check_tile(model, tile, device)
    preprocessors = preprocess if isinstance(preprocess, (list, tuple)) else [preprocess]
    n_bands = len(preprocessors)
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    window = blend_window(tile, overlap)
    strip_width = max(width, tile)
    probability_sum = np.zeros((n_bands, tile, width), np.float32)  # rows [origin, origin + tile) of the scene
    variance_sum = np.zeros((n_bands, tile, width), np.float32) if uncertainty and len(views) > 1 else None
    weight_sum = np.zeros((tile, width), np.float32)
    cols_per_batch = max(1, batch_size // n_bands)
    started = time.perf_counter()
    bar = tqdm(total=len(rows) * len(cols), desc="tiles", unit="tile", disable=None if progress else True,
               mininterval=1.0, smoothing=0.1)
    for index, row0 in enumerate(rows):
        row1 = min(row0 + tile, height)
        raw = reader.read(row0, row1)
        raw = raw[None] if raw.ndim == 2 else raw
        if len(raw) != n_bands:
            raise InferenceError(f"the reader gives {len(raw)} bands, {n_bands} preprocessings were given")
        images, invalids = zip(*(prep(band) for prep, band in zip(preprocessors, raw)))
        strips = [pad_to(image, tile, strip_width) for image in images]
        h = row1 - row0
        for start in range(0, len(cols), cols_per_batch):
            batch_cols = cols[start:start + cols_per_batch]
            batch = torch.from_numpy(np.stack([s[:, c:c + tile] for s in strips for c in batch_cols])[:, None])
            mean, variance = tta_probabilities(model, batch.to(device), views, device, precision,
                                             with_variance=variance_sum is not None)
            mean = mean.reshape(n_bands, len(batch_cols), tile, tile)
            if variance_sum is not None:
                variance = variance.reshape(mean.shape)
            for i, col0 in enumerate(batch_cols):
                w = min(tile, width - col0)
                weights = window[:h, :w]
                probability_sum[:, :h, col0:col0 + w] += mean[:, i, :h, :w] * weights
                if variance_sum is not None:
                    variance_sum[:, :h, col0:col0 + w] += variance[:, i, :h, :w] * weights
                weight_sum[:h, col0:col0 + w] += weights
            bar.update(len(batch_cols))
        done = (rows[index + 1] if index + 1 < len(rows) else height) - row0  # rows no later tile touches
        probability = probability_sum[:, :done] / weight_sum[:done]
        invalid = np.stack(invalids)[:, :done]
        if n_bands == 1 and not uncertainty:
            sink.write(row0, probability[0], invalid[0])
        else:
            variance = None if variance_sum is None else variance_sum[:, :done] / weight_sum[:done]
            fused, fused_invalid, std = fuse_bands(probability, variance, invalid, fuse)
            if uncertainty:
                sink.write(row0, fused, fused_invalid, uncertainty=std)
            else:
                sink.write(row0, fused, fused_invalid)
        # keep the rows the next tile row overlaps, moved to the top of the accumulators
        for accumulator in (probability_sum, variance_sum):
            if accumulator is not None:
                accumulator[:, :tile - done] = accumulator[:, done:].copy()
                accumulator[:, tile - done:] = 0.0
        weight_sum[:tile - done] = weight_sum[done:].copy()
        weight_sum[tile - done:] = 0.0
    bar.close()
    return {"height": height, "width": width, "tiles": len(rows) * len(cols), "bands": n_bands,
            "tta_views": len(views), "seconds": time.perf_counter() - started}


def tta_probabilities(model: nn.Module, batch: torch.Tensor, views: list, device: torch.device,
                      precision: str, with_variance: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean (and, with_variance, variance) over the TTA views of the water probabilities of a
    [N, 1, tile, tile] batch, each view mapped back to the tile's orientation: [N, tile, tile] float32."""
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


# ----------------------------------------------------------------------------------- files and scenes

def open_raster(path: Path):
    """The rasterio dataset of `path` (GDAL's warnings, e.g. "not georeferenced", kept quiet), or one
    InferenceError naming the file."""
    from lib.data.raster_io import open_quietly  # on first use, like rasterio itself
    return open_quietly(path, InferenceError, "{path}: cannot open the raster ({error})", quiet_all=True)


def open_input(path: Path, raster_band=1):
    """(reader, profile of the input, closer) for a GeoTIFF/any GDAL raster or a .npy file; raster_band
    is 1-based, an int or a list of bands."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            raise InferenceError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
        try:
            reader = ArrayReader(array, band=raster_band)
        except InferenceError as error:
            raise InferenceError(f"{path}: {error}") from None
        return reader, {"crs": None, "transform": None, "gcps": None}, lambda: None
    import rasterio
    dataset = open_raster(path)
    gcps = dataset.gcps if dataset.gcps and dataset.gcps[0] else None
    georeferenced = dataset.transform != rasterio.Affine.identity() or dataset.crs is not None
    profile = {"crs": dataset.crs, "transform": dataset.transform if georeferenced else None, "gcps": gcps}
    try:
        reader = RasterReader(dataset, raster_band)
    except InferenceError:
        dataset.close()
        raise
    return reader, profile, dataset.close


def read_decimated(path: Path, max_side: int, raster_band: int = 1) -> np.ndarray:
    """A small copy (long side <= max_side) of one band, by nearest-neighbour decimated reads; NaN for
    the raster's nodata value. Never reads the full-resolution scene into memory."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim == 3:
            array = array[raster_band - 1]
        step = max(1, -(-max(array.shape) // max_side))
        return np.array(array[::step, ::step], dtype=np.float32)
    import rasterio
    from rasterio.enums import Resampling
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as dataset:
            step = max(1, -(-max(dataset.height, dataset.width) // max_side))
            shape = (-(-dataset.height // step), -(-dataset.width // step))
            raw = dataset.read(raster_band, out_shape=shape, resampling=Resampling.nearest)
            nodata = dataset.nodatavals[raster_band - 1]
    out = raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        out[raw == nodata] = np.nan
    return out


def write_quicklook(input_path: Path, mask_path: Path, png_path: Path, preprocess: Callable,
                    raster_band: int = 1, max_side: int = QUICKLOOK_SIDE, image_format: str | None = None) -> Path:
    """PNG of the (normalized, gray) input with water in blue and no-data in dark red over it."""
    from PIL import Image
    image, invalid = preprocess(read_decimated(input_path, max_side, raster_band))
    mask = read_decimated(mask_path, max_side)
    h, w = min(image.shape[0], mask.shape[0]), min(image.shape[1], mask.shape[1])
    image, invalid, mask = image[:h, :w], invalid[:h, :w], mask[:h, :w]
    gray = np.repeat((image * 255.0)[..., None], 3, axis=2)
    water = mask == 1
    gray[water] = 0.45 * gray[water] + 0.55 * np.array([30.0, 110.0, 255.0])
    gray[(mask == NODATA) | invalid] = np.array([110.0, 20.0, 20.0])
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).save(png_path, format=image_format)
    return png_path


def predict_file(model: nn.Module, data: dict, input_path, output_path, *, band: str | None = None,
                 units: str | None = None, raster_band=1, tile: int | None = None, overlap: int | None = None,
                 batch_size: int = 8, threshold: float = 0.5, probability_path=None, quicklook_path=None,
                 device: str | torch.device = "cpu", progress: bool = True, precision: str = "fp32", **extra) -> dict:
    """Water mask of a whole scene file with a loaded model and its checkpoint's `data` settings.

    band: which band the input is (default the checkpoint's first val band): picks the normalization;
    "VV,VH" (with raster_band [1, 2]) maps both and fuses them.
    units: "db", "linear" (power) or "amplitude" (DN); default "amplitude" for KOMPSAT-5 checkpoints, else "db".
    tile: default the checkpoint's image_size; overlap: default tile // 4.
    Writes `output_path` (uint8 COG, or .npy), optionally `probability_path` (float32) and
    `quicklook_path` (PNG); `extra` takes the other lib.mapping.scene.SceneOptions / SceneOutputs fields
    and model_info. Returns a summary dict. (The flood products: lib/mapping/scene.py.)"""
    from dataclasses import fields
    from lib.mapping.scene import SceneOptions, SceneOutputs, map_scene
    output_fields = {f.name for f in fields(SceneOutputs)}
    bands = band.split(",") if isinstance(band, str) else band
    raster_bands = [raster_band] if isinstance(raster_band, int) else raster_band
    model_info = extra.pop("model_info", None)
    options = SceneOptions(bands=bands, raster_bands=raster_bands, units=units, tile=tile, overlap=overlap,
                           batch_size=batch_size, threshold=threshold, device=device, progress=progress,
                           precision=precision, **{k: v for k, v in extra.items() if k not in output_fields})
    outputs = SceneOutputs(mask=Path(output_path), probability=probability_path and Path(probability_path),
                           quicklook=quicklook_path and Path(quicklook_path),
                           **{k: v and Path(v) for k, v in extra.items() if k in output_fields})
    inputs = [Path(p) for p in input_path] if isinstance(input_path, (list, tuple)) else [Path(input_path)]
    return map_scene(model, data, inputs, outputs, options, model_info=model_info)
