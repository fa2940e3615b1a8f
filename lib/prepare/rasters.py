"""rasterio reading for the converters: every failure names the file, no-data becomes NaN (images) or
IGNORE_INDEX (labels), and label values nobody declared are refused rather than guessed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.data.labels import IGNORE_INDEX
from lib.errors import DataError
from lib.data.raster_io import band_pages, open_quietly, read_failure, read_pages

TIFF_SUFFIXES = (".tif", ".tiff")


class LabelValueError(DataError):
    """A label raster holds values that --water/--land/--nodata do not name."""


def open_raster(path: Path):
    """An open rasterio dataset; a file GDAL cannot read becomes a DataError naming it. Plain
    (ungeoreferenced) rasters are allowed quietly; prepare.json says so."""
    from rasterio.errors import RasterioIOError
    return open_quietly(path, DataError, "{path}: not a readable GeoTIFF ({error})", catch=RasterioIOError)


def header(path: Path) -> dict:
    """Size, band count, dtype, nodata and georeferencing of a raster, without reading its pixels."""
    with open_raster(path) as dataset:
        names, note = band_pages(dataset)
        check_pixel_type(path, dataset.dtypes[0])
        return {"width": dataset.width, "height": dataset.height, "count": len(names) or dataset.count,
                "dtype": dataset.dtypes[0], "nodata": dataset.nodata,
                "crs": dataset.crs.to_string() if dataset.crs else None,
                "transform": list(dataset.transform)[:6], "bounds": list(dataset.bounds), "pages": note}


def check_pixel_type(path: Path, dtype: str) -> None:
    """A complex raster (SLC) would be read from its real part: refused, saying what to convert it to."""
    if dtype.startswith("complex"):
        raise DataError(f"{path}: complex pixels ({dtype}, e.g. single-look complex SAR); convert to backscatter "
                        f"in dB (10 * log10(|z|^2), calibrated) first")


def read_raster(path: Path, rows: tuple[int, int] | None = None, indexes=None) -> tuple[np.ndarray, float | None]:
    """Bands (count, H, W) as stored (the 1-based `indexes`, default all) of the rows [start, stop) (default
    all), and the raster's nodata value. Reading by rows keeps a whole scene out of memory."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window
    with open_raster(path) as dataset:
        window = None if rows is None else Window(0, rows[0], dataset.width, rows[1] - rows[0])
        check_pixel_type(path, dataset.dtypes[0])
        try:
            names, _ = band_pages(dataset)
            return (read_pages(names, window, indexes) if names else dataset.read(indexes, window=window)), dataset.nodata
        except RasterioError as error:  # a header that opens but tiles that do not decode (a truncated file)
            raise DataError(f"{path}: pixel data unreadable ({read_failure(error)})") from None


def read_image(path: Path, extra_nodata: float | None = None, rows=None, indexes=None) -> np.ndarray:
    """float32 bands (count, H, W); the raster's nodata value, `extra_nodata` and NaN/inf all become NaN."""
    raw, nodata = read_raster(path, rows, indexes)
    image = raw.astype(np.float32)
    for value in (nodata, extra_nodata):
        if value is not None and not np.isnan(value):
            image[raw == value] = np.nan
    image[~np.isfinite(image)] = np.nan
    return image


def map_labels(raw: np.ndarray, path: Path, water, land, nodata, tag: float | None) -> np.ndarray:
    """uint8 target: `water` values -> 1, `land` -> 0, `nodata`, the raster's nodata `tag` and NaN ->
    IGNORE_INDEX. Any other value is a DataError: a label convention nobody declared is not guessed."""
    raw = np.asarray(raw)
    target = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    is_water, is_land = np.isin(raw, water), np.isin(raw, land)
    target[is_water], target[is_land] = 1, 0
    known = is_water | is_land | np.isin(raw, nodata)
    if tag is not None:
        known |= np.isnan(raw) if np.isnan(tag) else (raw == tag)
    if raw.dtype.kind == "f":
        known |= np.isnan(raw)
    if not known.all():
        values = np.unique(raw[~known])
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise LabelValueError(f"{path}: label values {shown} are neither water ({fmt(water)}), land ({fmt(land)}) nor "
                        f"no-data ({fmt(nodata)}); say what they mean with --water/--land/--nodata")
    return target


def read_label(path: Path, water, land, nodata, honour_tag: bool = True, rows=None) -> np.ndarray:
    """Band 1 of a label raster as a uint8 target (see map_labels). A nodata tag that equals a water or land
    value is refused: honouring it would silently turn that class into no-data."""
    raw, tag = read_raster(path, rows)
    if raw.shape[0] != 1:
        raise DataError(f"{path}: a label raster must have 1 band, this one has {raw.shape[0]}")
    if not honour_tag:
        tag = None
    if tag is not None and not np.isnan(tag) and (tag in list(water) or tag in list(land)):
        raise DataError(f"{path}: the raster's nodata tag {tag:g} is also a water/land value "
                        f"(--water {fmt(water)}, --land {fmt(land)}); pass --ignore-nodata-tag to use the values as labels")
    return map_labels(raw[0], path, water, land, nodata, tag)


def fmt(values) -> str:
    return ",".join(f"{v:g}" for v in values) or "none"
