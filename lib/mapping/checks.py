"""Checks of a scene before any output exists: do the values look like the declared units, which band of
a multi-band raster is read, how much of the valid input the preprocessing turns into no-data.

They look at a decimated copy (long side <= SAMPLE_SIDE), so they cost a few reads, not a pass."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from lib.errors import InferenceError

SAMPLE_SIDE = 512
NEGATIVE_SHARE_LIMIT = 0.01   # linear power / amplitude: more than this share below 0 is not those units
NODATA_WARN_SHARE = 0.5       # warn when the preprocessing makes more than this share of valid input no-data
RANGE_MARGIN_DB = 10.0        # a median more than this beyond the band's range (a factor 10 in power) is not
                              # that band in those units (linear power read as dB: HH about 0.1 for 20..75 dB)


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False, integer=False) -> None:
    """One option against its range: `name` is how the user wrote it (--threshold)."""
    if value is None:
        return
    if integer and (isinstance(value, bool) or not float(value).is_integer()):
        raise InferenceError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise InferenceError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        allowed = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise InferenceError(f"{name} must be in {allowed}, got {value!r}")


def check_file(path: Path, role: str) -> None:
    """An input path that is a file: a folder or a missing path is one error naming it."""
    if path.is_dir():
        raise InferenceError(f"{path}: {role} is a folder; give the raster file itself")
    if not path.is_file():
        raise InferenceError(f"{path}: {role} not found")


def check_not_complex(path: Path, dtypes) -> None:
    """A complex raster (SLC) would be cast to its real part, which is not backscatter in any units."""
    found = sorted({str(d) for d in dtypes if np.dtype(d).kind == "c"})
    if found:
        raise InferenceError(f"{path}: complex values ({', '.join(found)}), a single-look complex product: its real "
                             f"part is not backscatter; convert it to intensity first (|z|^2, in dB: 10*log10)")


def check_units(path: Path, sample: np.ndarray, dtype: str, units: str, band: str, normalization: dict,
                raster_band: int, warn: Callable[[str], None],
                to_db: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Stop when the values cannot be in `units`: dB from integers, amplitude or linear power with negative
    values, dB that are non-negative for a band whose range is mostly negative (Sentinel-1), and, for every
    band, a median (converted to dB) far outside the band's range; warn when it is just outside."""
    where = f"{path} (band {raster_band} as {band}, --units {units})"
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        warn(f"{where}: the sampled pixels are all no-data")
        return
    low, high = float(finite.min()), float(finite.max())
    found = f"values {low:.4g} .. {high:.4g} (median {float(np.median(finite)):.4g})"
    band_low, band_high = sorted(map(float, normalization[band]))
    if units == "db":
        if np.dtype(dtype).kind in "iub":
            raise InferenceError(f"{where}: {dtype} integers are not dB ({found}); backscatter in dB is float. "
                                 f"Pass --units linear or --units amplitude if that is what the raster holds")
        if band_low + band_high < 0 and np.median(finite) >= 0:
            what = "no negative value" if low >= 0 else "a median at or above 0"
            raise InferenceError(f"{where}: {what} ({found}) although {band} in dB is mostly below 0 (range "
                                 f"{band_low:g} .. {band_high:g}); this looks like linear power or amplitude: "
                                 f"pass --units linear or --units amplitude")
    else:
        negative = float((finite < 0).mean())
        if negative > NEGATIVE_SHARE_LIMIT:
            raise InferenceError(f"{where}: {100 * negative:.1f}% negative values ({found}); {units} values are "
                                 f"non-negative: this looks like dB, pass --units db")
        if negative > 0:
            warn(f"{where}: {100 * negative:.2f}% negative values ({found}) become no-data")
    if to_db is not None:  # the unit conversion of the run (lib.mapping.rasters.to_db)
        check_band_range(where, to_db(finite), units, band, (band_low, band_high), warn)


def check_band_range(where: str, db: np.ndarray, units: str, band: str, band_range: tuple[float, float],
                     warn: Callable[[str], None]) -> None:
    """The median in dB (the values after the unit conversion) against the band's range: far outside is an
    error, just outside a warning; both say what was found."""
    db = db[np.isfinite(db)]
    if db.size == 0:
        return
    median, (band_low, band_high) = float(np.median(db)), band_range
    margin = RANGE_MARGIN_DB
    found = (f"median {median:.4g} dB after --units {units}" if units != "db" else f"median {median:.4g} dB")
    expected = f"{band} in dB lies in {band_low:g} .. {band_high:g}"
    if not band_low - margin <= median <= band_high + margin:
        raise InferenceError(f"{where}: {found}, far from where {expected}; check --units and --band")
    if not band_low <= median <= band_high:
        warn(f"{where}: {found}, outside the range where {expected}: most values saturate at its end "
             f"(if that is unexpected, check --units and --band)")


def check_nodata_share(path: Path, sample: np.ndarray, invalid: np.ndarray, units: str,
                       warn: Callable[[str], None]) -> float:
    """Share of the valid (finite) sampled input that the unit conversion makes no-data; warns above half."""
    finite = np.isfinite(sample)
    if not finite.any():
        return 0.0
    share = float((invalid & finite).sum() / finite.sum())
    if share > NODATA_WARN_SHARE:
        warn(f"{path}: {100 * share:.0f}% of the valid input pixels become no-data with --units {units} "
             f"(values <= 0 have no logarithm); check --units")
    return share


def note_band(path: Path, count: int, raster_bands: list[int], bands: list[str], note: Callable[[str], None]) -> None:
    """Say which band of a multi-band raster is read (reading band 1 of three silently misled users)."""
    if count > 1:
        read = ", ".join(f"band {r} as {b}" for r, b in zip(raster_bands, bands))
        note(f"{path} has {count} bands; reading {read} (--raster-band / --band pick others)")
