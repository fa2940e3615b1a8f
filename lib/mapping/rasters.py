"""Raster readers and writers of whole-scene mapping, and the input files a scene opens once.

Readers (lib.mapping.tiling.Reader) give rows [row0, row1) as float32 raw values with no-data as NaN:
`ArrayReader` (a numpy array or memory-mapped .npy), `RasterReader` (bands of a rasterio dataset or
WarpedVRT, read by windows), `StackReader` (one file per band). Writers take finished rows: `ArrayWriter` (a numpy array or .npy
memory map), `RasterWriter` (rasterio windows, whole block rows at a time). `InputFile` is one input
opened once (its reader, grid, dtype and decimated reads); `open_aligned` reads another raster on a
scene's grid through a WarpedVRT. `make_preprocess` turns raw values in the input's units into the
model's input, as in training.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from lib.data.bands import normalize
from lib.errors import InferenceError, OutputError
from lib.mapping import checks, grids

NODATA = 255                      # no-data value of the mask
MASK_BLOCK = 256                  # GeoTIFF block size of the outputs
GDAL_CACHE_MB = 128               # GDAL's block cache (its default, 5% of RAM, would count as "our" memory)


# ------------------------------------------------------------------------------------------ readers

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

    def __init__(self, dataset, band=1, path=None):
        self.bands, self.single = band_list(band)
        self.path = path or dataset.name
        for b in self.bands:
            if not 1 <= b <= dataset.count:
                raise InferenceError(f"{dataset.name}: band {b} requested, the raster has {dataset.count}")
        self.dataset = dataset
        self.height, self.width = dataset.height, dataset.width

    def read(self, row0: int, row1: int) -> np.ndarray:
        from rasterio.windows import Window
        with read_errors(self.path):
            raw = self.dataset.read(self.bands, window=Window(0, row0, self.width, row1 - row0))
        rows = raw.astype(np.float32, copy=True)
        for index, band in enumerate(self.bands):
            nodata = self.dataset.nodatavals[band - 1]
            if nodata is not None and not np.isnan(nodata):
                rows[index][raw[index] == nodata] = np.nan
        return rows[0] if self.single else rows


@contextmanager
def read_errors(path):
    """GDAL's failures while reading pixels (a truncated GeoTIFF: "Read failed. See previous exception") as
    one InferenceError naming the file and GDAL's reason."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only rasterio's own errors are turned into a message
        if not type(error).__module__.startswith("rasterio"):
            raise
        from lib.data.raster_io import read_failure
        raise InferenceError(f"{path}: {read_failure(error)}") from None


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
        return normalize(to_db(raw, units, calibration_db), band, normalization)
    return preprocess


def to_db(raw: np.ndarray, units: str, calibration_db: float = 0.0) -> np.ndarray:
    """Raw values in `units` as dB: linear power 10*log10, amplitude 20*log10(DN) + calibration_db (DN <= 0
    NaN), dB as they are."""
    if units == "linear":
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(raw)
    if units == "amplitude":
        from lib.data.kompsat5 import amplitude_to_db
        return amplitude_to_db(raw, calibration_db)[0]
    return raw


# ------------------------------------------------------------------------------------------ writers

class ArrayWriter:
    """Writes rows into a numpy array (in memory, or a .npy memory map from np.lib.format.open_memmap)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def write(self, row0: int, rows: np.ndarray) -> None:
        self.array[row0:row0 + len(rows)] = rows

    def close(self) -> None:
        if hasattr(self.array, "flush"):
            self.array.flush()


class BlockRows:
    """Rows that arrive in order, handed on a whole number of `block` rows at a time (the rest by `take_all`).
    Each item is a tuple of arrays cut along the same rows (a raster's rows, or several layers of them)."""

    def __init__(self, block: int):
        self.block = block
        self.pending: list[tuple] = []
        self.start = 0        # first row of the pending rows
        self.count = 0        # rows pending

    def add(self, row0: int, *parts: np.ndarray) -> tuple[int, tuple] | None:
        """Add rows from row0 on; (first row, the parts) of the whole blocks now complete, else None."""
        if row0 != self.start + self.count:
            raise RuntimeError(f"rows must arrive in order: expected row {self.start + self.count}, got {row0}")
        self.pending.append(tuple(np.asarray(part) for part in parts))
        self.count += len(parts[0])
        return self.take(self.count - self.count % self.block) if self.count >= self.block else None

    def take_all(self) -> tuple[int, tuple] | None:
        return self.take(self.count)

    def take(self, n: int) -> tuple[int, tuple] | None:
        if n <= 0:
            return None
        joined = tuple(np.concatenate(rows) if len(self.pending) > 1 else rows[0] for rows in zip(*self.pending))
        rest = tuple(rows[n:] for rows in joined)
        self.pending = [rest] if len(rest[0]) else []
        start, self.start, self.count = self.start, self.start + n, self.count - n
        return start, tuple(rows[:n] for rows in joined)


class RasterWriter:
    """Writes rows into band 1 of an open rasterio dataset. Rows are buffered and written a whole block
    row at a time, so a compressed, tiled GeoTIFF gets every block exactly once."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.rows = BlockRows(dataset.block_shapes[0][0])

    def write(self, row0: int, rows: np.ndarray) -> None:
        self._write(self.rows.add(row0, rows))

    def _write(self, taken) -> None:
        from rasterio.windows import Window
        if taken is not None:
            start, (buffer,) = taken
            self.dataset.write(buffer, 1, window=Window(0, start, self.dataset.width, len(buffer)))

    def close(self) -> None:
        self._write(self.rows.take_all())


def create_scratch(path: Path, grid: dict, dtype: str, nodata):
    """A tiled, deflated single-band GeoTIFF on the scene's grid, open for writing by RasterWriter."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    profile = dict(driver="GTiff", height=grid["height"], width=grid["width"], count=1, dtype=dtype, nodata=nodata,
                   compress="deflate", ZLEVEL=1, BIGTIFF="IF_SAFER", tiled=True, blockxsize=MASK_BLOCK,
                   blockysize=MASK_BLOCK)
    if grid.get("crs") is not None:
        profile["crs"] = grid["crs"]
    if grid.get("transform") is not None:
        profile["transform"] = grid["transform"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path, "w", **profile)
    except rasterio.errors.RasterioIOError as error:
        raise OutputError(f"{path}: cannot write ({error})") from None
    if grid.get("gcps") is not None and grid.get("transform") is None:
        dataset.gcps = grid["gcps"]
    return dataset


# ---------------------------------------------------------------------------------------- input files

def is_georeferenced(grid: dict) -> bool:
    return grid.get("crs") is not None and grid.get("transform") is not None


def open_raster(path: Path):
    """The rasterio dataset of `path` (GDAL's warnings, e.g. "not georeferenced", kept quiet), or one
    InferenceError naming the file."""
    from lib.data.raster_io import open_quietly  # on first use, like rasterio itself
    return open_quietly(path, InferenceError, "{path}: cannot open the raster ({error})", quiet_all=True)


def decimated(source, max_side: int, band: int = 1) -> np.ndarray:
    """A small copy (long side <= max_side) of one band of an open rasterio dataset or a numpy array, by
    nearest-neighbour decimated reads; NaN for the raster's nodata value. Never reads the full-resolution
    scene into memory."""
    if isinstance(source, np.ndarray):
        array = source[band - 1] if source.ndim == 3 else source
        step = max(1, -(-max(array.shape) // max_side))
        return np.array(array[::step, ::step], dtype=np.float32)
    from rasterio.enums import Resampling
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = max(1, -(-max(source.height, source.width) // max_side))
        shape = (-(-source.height // step), -(-source.width // step))
        with read_errors(source.name):
            raw = source.read(band, out_shape=shape, resampling=Resampling.nearest)
        nodata = source.nodatavals[band - 1]
    out = raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        out[raw == nodata] = np.nan
    return out


def read_decimated(path: Path, max_side: int, band: int = 1) -> np.ndarray:
    """`decimated` of a file: a raster or a .npy array."""
    if path.suffix.lower() == ".npy":
        return decimated(np.load(path, mmap_mode="r", allow_pickle=False), max_side, band)
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as dataset:
            return decimated(dataset, max_side, band)


class InputFile:
    """One input file, opened once: `reader` (of the bands read, on the scene's grid), `source` (the
    rasterio dataset or the .npy memory map, for its dtype and decimated reads), `grid` (crs, transform,
    gcps, height, width) and `close`."""

    def __init__(self, path: Path, reader, source, grid: dict, close: Callable[[], None]):
        self.path, self.reader, self.source, self.grid, self.close = path, reader, source, grid, close

    @property
    def count(self) -> int:
        """Bands in the file."""
        return 1 if isinstance(self.source, np.ndarray) else self.source.count

    def dtype(self, band: int) -> str:
        if isinstance(self.source, np.ndarray):
            return str(self.source.dtype)
        return self.source.dtypes[band - 1]

    def decimated(self, max_side: int, band: int = 1) -> np.ndarray:
        return decimated(self.source, max_side, band)


def open_input(path: Path, raster_band=1) -> InputFile:
    """A GeoTIFF/any GDAL raster or a .npy file; raster_band is 1-based, an int or a list of bands."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            raise InferenceError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
        checks.check_not_complex(path, [array.dtype])
        try:
            reader = ArrayReader(array, band=raster_band)
        except InferenceError as error:
            raise InferenceError(f"{path}: {error}") from None
        grid = {"crs": None, "transform": None, "gcps": None, "height": reader.height, "width": reader.width}
        return InputFile(path, reader, array, grid, lambda: None)
    import rasterio
    from lib.mapping.pages import open_bands
    dataset = open_raster(path)
    try:
        dataset = open_bands(dataset)
        checks.check_not_complex(path, dataset.dtypes)
        reader = RasterReader(dataset, raster_band, path)
    except BaseException:
        dataset.close()
        raise
    gcps = dataset.gcps if dataset.gcps and dataset.gcps[0] else None
    georeferenced = dataset.transform != rasterio.Affine.identity() or dataset.crs is not None
    grid = {"crs": dataset.crs, "transform": dataset.transform if georeferenced else None, "gcps": gcps,
            "height": reader.height, "width": reader.width}
    return InputFile(path, reader, dataset, grid, dataset.close)


def open_aligned(path: Path, grid: dict, band=1, resampling: str = "nearest", *, role: str = "auxiliary",
                 warn: Callable[[str], None] = warnings.warn) -> InputFile:
    """`path` read on the scene's grid; band: 1-based int or list (RasterReader). Reprojected with
    WarpedVRT when both rasters are georeferenced; refused when only one is; read by position when neither
    is and the sizes match (lib/mapping/grids.py). Outside its extent the raster is no-data."""
    path = Path(path)
    checks.check_file(path, f"the {role} raster")
    source = open_raster(path)
    try:
        return aligned(path, source, grid, band, resampling, role, warn)
    except BaseException:
        source.close()
        raise


def aligned(path: Path, source, grid: dict, band, resampling: str, role: str, warn: Callable) -> InputFile:
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    checks.check_not_complex(path, source.dtypes)
    wanted = [band] if isinstance(band, int) else list(band)
    if any(not 1 <= b <= source.count for b in wanted):
        from lib.data.raster_io import pages
        paged = (f"; it is a multi-page TIFF of {len(pages(source))} pages, and the {role} raster is read through "
                 f"GDAL's warper, which sees the first page: store the bands as bands of one GeoTIFF "
                 f"(gdal_merge.py -separate)") if len(pages(source)) > 1 else ""
        raise InferenceError(f"{path}: band {','.join(map(str, wanted))} requested, the raster has {source.count}"
                             + paged)
    if grids.check_pairable(path, role, source, grid, warn):
        vrt = WarpedVRT(source, crs=grid["crs"], transform=grid["transform"], width=grid["width"],
                        height=grid["height"], resampling=Resampling[resampling], dtype="float32", nodata=np.nan)
        return InputFile(path, RasterReader(vrt, band, path), source, grid, lambda: (vrt.close(), source.close()))
    return InputFile(path, RasterReader(source, band, path), source, grid, source.close)
