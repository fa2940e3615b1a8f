"""Band names and the per-band normalization table (clip to [lo, hi], then scale to [0, 1]).

Edit BAND_RANGES to change a range; every checkpoint records the table it was trained with, so
evaluation and inference always normalize as training did.
"""
from __future__ import annotations

import numpy as np

SAR_DB_RANGE = (-22.225124, 0.0)  # the published SAR-KD-Flood clip range for backscatter in dB

BAND_RANGES: dict[str, tuple[float, float]] = {
    "VV": SAR_DB_RANGE,      # Sentinel-1 backscatter, dB
    "VH": SAR_DB_RANGE,      # Sentinel-1 backscatter, dB
    "B2": (0.0, 0.3),        # Sentinel-2 reflectance (DN / 10000): water and land lie below 0.3,
    "B3": (0.0, 0.3),        # only clouds and snow saturate
    "B4": (0.0, 0.3),
    "NDVI": (-1.0, 1.0),     # normalized indices are bounded by construction
    "NDWI": (-1.0, 1.0),
    "HH": (20.0, 75.0),      # KOMPSAT-5 HH amplitude in dB, 20*log10(DN) + CALIBRATION_DB (lib/kompsat5.py):
                             # 20 dB = DN 10, below the darkest calm water (DN tens to a few hundred);
                             # 75 dB = DN ~5600, above fields/forest (hundreds to thousands), so only
                             # strong urban/ship scatterers saturate. Synthetic data (make_kompsat5_demo.py):
                             # water p0.5-p99.5 31-49 dB, land 39-69 dB.
                             # A CALIBRATION_DB other than 0 shifts the data: shift this range by as much.
}

TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")
VAL_BANDS = ("VV", "VH")


def band_range(band: str, ranges: dict | None = None) -> tuple[float, float]:
    table = BAND_RANGES if ranges is None else ranges
    if band not in table:
        raise KeyError(f"no normalization range for band {band!r}; known bands: {', '.join(table)}. "
                       "Add it to BAND_RANGES in lib/bands.py")
    lo, hi = table[band]
    return float(lo), float(hi)


def normalize(raw: np.ndarray, band: str, ranges: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clip-and-scale `raw` to float32 [0, 1]; returns (image, invalid) where invalid marks NaN/inf
    pixels (set to 0 in the image, to be treated as no-data)."""
    lo, hi = band_range(band, ranges)
    raw = np.asarray(raw, dtype=np.float32)
    invalid = ~np.isfinite(raw)
    scaled = (raw - lo) * np.float32(1.0 / (hi - lo))
    image = np.clip(scaled, 0.0, 1.0, out=scaled)
    if invalid.any():
        image[invalid] = 0.0
    return image, invalid
