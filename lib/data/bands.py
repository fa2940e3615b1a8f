"""Band names and the per-band normalization tables (clip to [lo, hi], then scale to [0, 1]; lo > hi
inverts the band).

NORMALIZATION (a shared constant, lib/config.py) picks a table: "sar" (default) or "published". Every
checkpoint records the table it was trained with (data["normalization"], data["normalization_name"]),
so evaluation and inference always normalize as training did. Edit a table to change a range.
"""
from __future__ import annotations

import numpy as np

from lib.errors import ConfigError

SAR_DB_RANGE = (-22.225124, 0.0)  # the published SAR-KD-Flood clip range for backscatter in dB, every SAR band

# Sentinel-1 ranges that keep the water/land contrast (docs/real-sar.md has the numbers). Real chip in
# ../shared (Sen1Floods11 Spain_7370579), percentiles 1/5/50/95/99 in dB:
#   VV water -28.0 -25.2 -18.4 -7.7 -2.0   land -20.0 -15.8 -9.4 -2.2 +3.9
#   VH water -43.4 -35.9 -25.9 -16.3 -13.0 land -28.4 -24.0 -16.8 -11.9 -8.4
# Literature: calm water -18..-25 dB VV, -24..-32 dB VH; land mostly above -15 VV / -22 VH; urban and
# layover above 0 dB VV. The floors lie below calm water (only the darkest water saturates, which stays
# water), the ceilings above the land's 99th percentile (only bright urban scatterers saturate). The
# published floor, -22.2 dB, cuts VH at its water/land crossing (-20..-24 dB) and erases that contrast.
SAR_VV_RANGE = (-30.0, 5.0)
SAR_VH_RANGE = (-38.0, -5.0)

OTHER_RANGES: dict[str, tuple[float, float]] = {
    "B2": (0.0, 0.3),        # Sentinel-2 reflectance (DN / 10000): water and land lie below 0.3,
    "B3": (0.0, 0.3),        # only clouds and snow saturate
    "B4": (0.0, 0.3),
    "NDVI": (-1.0, 1.0),     # normalized indices are bounded by construction
    "NDWI": (-1.0, 1.0),
    "HH": (20.0, 75.0),      # KOMPSAT-5 HH amplitude in dB, 20*log10(DN) + CALIBRATION_DB (lib/data/kompsat5/):
                             # 20 dB = DN 10, below the darkest calm water (DN tens to a few hundred);
                             # 75 dB = DN ~5600, above fields/forest (hundreds to thousands), so only
                             # strong urban/ship scatterers saturate. Synthetic data (make_kompsat5_demo.py):
                             # water p0.5-p99.5 31-49 dB, land 39-69 dB.
                             # A CALIBRATION_DB other than 0 shifts the data: shift this range by as much.
}

# NDWI is the one band where water is bright; "sar" maps it to [0, 1] the other way round (lo > hi), so
# that water is dark in every normalized band and one band-blind network sees one polarity (docs/real-sar.md)
NDWI_WATER_DARK = (1.0, -1.0)

NORMALIZATIONS: dict[str, dict[str, tuple[float, float]]] = {
    "sar": {"VV": SAR_VV_RANGE, "VH": SAR_VH_RANGE, **OTHER_RANGES, "NDWI": NDWI_WATER_DARK},
    "published": {"VV": SAR_DB_RANGE, "VH": SAR_DB_RANGE, **OTHER_RANGES},
}
DEFAULT_NORMALIZATION = "sar"
BAND_RANGES = NORMALIZATIONS[DEFAULT_NORMALIZATION]  # the default table
BAND_UNITS = {"VV": "dB", "VH": "dB", "HH": "dB"}


def normalization_table(name: str) -> dict[str, tuple[float, float]]:
    """The range table NORMALIZATION=`name` selects."""
    if name not in NORMALIZATIONS:
        raise ConfigError(f"NORMALIZATION={name!r}: expected one of {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


CUSTOM_NORMALIZATION = "custom"  # a recorded table that is none of NORMALIZATIONS (e.g. a range edited since)


def normalization_name(recorded: dict | None) -> str:
    """Which table of NORMALIZATIONS a recorded normalization ({band: [lo, hi]}) is: the first whose ranges
    equal it on every recorded band; CUSTOM_NORMALIZATION when none does (never a guess)."""
    for name, table in NORMALIZATIONS.items():
        if recorded and all(band in table and list(map(float, table[band])) == list(map(float, r))
                            for band, r in recorded.items()):
            return name
    return CUSTOM_NORMALIZATION


def recorded_normalization_name(data: dict) -> str:
    """The normalization name a checkpoint's data settings record, or, for a checkpoint from before it was
    recorded, the name derived from its table (normalization_name)."""
    return data.get("normalization_name") or normalization_name(data.get("normalization"))


def band_unit(band: str) -> str:
    return BAND_UNITS.get(band, "")


TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")
VAL_BANDS = ("VV", "VH")


def band_range(band: str, ranges: dict | None = None) -> tuple[float, float]:
    table = BAND_RANGES if ranges is None else ranges
    if band not in table:
        raise KeyError(f"no normalization range for band {band!r}; known bands: {', '.join(table)}. "
                       "Add it to BAND_RANGES in lib/data/bands.py")
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
