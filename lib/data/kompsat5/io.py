"""Reading and checking KOMPSAT-5 files: amplitude-to-dB conversion, list-file parsing and GeoTIFF header
checks. Every problem is a DataError naming the list file, the line and the path."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.bands import normalize
from lib.data.labels import IGNORE_INDEX, label_to_target
from lib.errors import DataError
from lib.data.raster_io import open_quietly, read_failure

BAND = "HH"
CALIBRATION_DB = 0.0         # dB added to 20*log10(DN); BAND_RANGES["HH"] applies to the sum
NODATA_DN = 0                # image DN that marks no-data (outside the swath)
MASK_WATER, MASK_LAND = 255, 0
MAKE_DATA_HINT = ("make a synthetic dataset with `python make_kompsat5_demo.py` (writes data_k5/; then "
                  "DATA_ROOT=data_k5 TRAIN_LIST=train_full/train.txt VAL_LIST=train_full/val.txt)")


# ------------------------------------------------------------------------------------ conversion

def amplitude_to_db(dn, calibration_db: float = CALIBRATION_DB) -> tuple[np.ndarray, np.ndarray]:
    """(20*log10(DN) + calibration_db as float32, no-data mask). No-data: DN 0 (and, for float input,
    DN <= 0 or non-finite); those pixels are NaN in the dB array."""
    dn = np.asarray(dn)
    values = dn.astype(np.float32)
    nodata = ~(values > NODATA_DN)  # also catches NaN
    if np.issubdtype(values.dtype, np.floating):
        nodata |= ~np.isfinite(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.log10(values, dtype=np.float32) * np.float32(20.0) + np.float32(calibration_db)
    db[nodata] = np.nan
    return db, nodata


def hh_image(dn, calibration_db: float = CALIBRATION_DB, ranges: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Network input from DN amplitudes: (image float32 in [0, 1], no-data mask); no-data pixels are 0."""
    db, _ = amplitude_to_db(dn, calibration_db)
    return normalize(db, BAND, ranges)  # NaN (no-data) pixels come back as invalid


def mask_to_target(mask) -> np.ndarray:
    """Mask 255 -> 1 (water), 0 -> 0 (land), anything else -> IGNORE_INDEX (no-data); uint8."""
    return label_to_target(mask, water=MASK_WATER, land=MASK_LAND)


def preprocess(dn, mask, calibration_db: float = CALIBRATION_DB, ranges: dict | None = None):
    """(image float32 [H, W] in [0, 1], target uint8 [H, W]) from a DN array and its 0/255 mask."""
    image, nodata = hh_image(dn, calibration_db, ranges)
    target = mask_to_target(mask)
    target[nodata] = IGNORE_INDEX
    return image, target


# ---------------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path
    where: str  # "list file, line N"


def read_list(root: Path | str, list_file: Path | str) -> list[Sample]:
    """The samples of a list file (`image_path<TAB>mask_path` per line, relative to root).
    A malformed line or a missing file is a DataError naming the list file, the line and the path."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"DATA_ROOT {str(root)!r} does not exist; {MAKE_DATA_HINT}")
    path = root / list_file
    if not path.is_file():
        raise DataError(f"list file {path} does not exist (TRAIN_LIST/VAL_LIST are relative to DATA_ROOT); "
                        f"{MAKE_DATA_HINT}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the list file ({type(error).__name__}: {error})") from None
    samples = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        fields = [field.strip() for field in line.split("\t") if field.strip()]
        if len(fields) != 2:
            found = "no tab" if "\t" not in line else f"{len(fields)} fields"
            raise DataError(f"{where}: expected image_path<TAB>mask_path, found {found}: {line!r}")
        image, mask = root / fields[0], root / fields[1]
        for kind, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise DataError(f"{where}: {kind} file {file} does not exist")
        samples.append(Sample(image, mask, where))
    if not samples:
        raise DataError(f"{path}: no samples (every line is blank or a comment)")
    return samples


def _open(path: Path):
    # any failure (RasterioIOError for garbage bytes, an unknown format, ...) is a DataError naming the file
    return open_quietly(path, DataError, "{path}: not a readable GeoTIFF ({kind}: {error})")


def tiff_header(path: Path) -> tuple[int, int, int, str]:
    """(height, width, bands, dtype) of a GeoTIFF, read from its header only."""
    with _open(path) as src:
        if src.driver != "GTiff":
            raise DataError(f"{path}: not a GeoTIFF (GDAL reads it as {src.driver})")
        return src.height, src.width, src.count, src.dtypes[0]


def read_tiff(path: Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Band 1 of a GeoTIFF, or the (row, col, height, width) window of it."""
    from rasterio.windows import Window
    with _open(path) as src:
        try:
            if window is None:
                return src.read(1)
            row, col, height, width = window
            return src.read(1, window=Window(col, row, width, height))
        except Exception as error:  # truncated or corrupt data
            raise DataError(f"{path}: cannot decode the GeoTIFF ({read_failure(error)})") from None


def check_sample(sample: Sample) -> tuple[int, int]:
    """Check both files' headers; returns the scene's (height, width)."""
    height, width, count, dtype = tiff_header(sample.image)
    if count != 1:
        raise DataError(f"{sample.image}: expected 1 band (HH amplitude), found {count} ({sample.where})")
    if dtype != "uint16":
        raise DataError(f"{sample.image}: expected uint16 HH amplitude (digital numbers), found {dtype} "
                        f"({sample.where})")
    m_height, m_width, m_count, m_dtype = tiff_header(sample.mask)
    if m_count != 1:
        raise DataError(f"{sample.mask}: expected a 1-band mask, found {m_count} bands ({sample.where})")
    if not np.issubdtype(np.dtype(m_dtype), np.integer):
        raise DataError(f"{sample.mask}: expected an integer mask (0 land, 255 water), found {m_dtype} "
                        f"({sample.where})")
    if (m_height, m_width) != (height, width):
        raise DataError(f"{sample.mask}: mask is {m_height}x{m_width} but its image {sample.image} is "
                        f"{height}x{width} ({sample.where})")
    return height, width
