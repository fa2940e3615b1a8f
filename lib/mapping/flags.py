"""Advisory flags of a scene (predict.py --flags): uint8 bits, 0 where nothing is to be said.

    1  no-data: the input has no valid value (NaN/inf, the nodata value, power or amplitude <= 0)
    2  low backscatter contrast: a water pixel in a block of BLOCK x BLOCK px (on a fixed grid from the
       scene's top-left corner) where the mean backscatter of the water pixels is less than CONTRAST_DB
       below that of the land pixels (both at least MIN_SHARE of the block's valid pixels): the mapping
       leans on the model more than on a dark surface (flooded vegetation, wet snow, rough water)
    4  steep slope: the DEM (--dem, any grid, read bilinear on the scene's) is steeper than STEEP_SLOPE_DEG:
       radar shadow and layover, and terrain floods rarely stand on
    8  excluded: non-zero in --exclude

Backscatter is the first band's (a stacked checkpoint's: the threshold's band, lib/mapping/options.py
backscatter_band), in dB within the checkpoint's normalization range (the model's input
times the range's span; values outside the range count as its ends).
"""
from __future__ import annotations

import numpy as np

from lib.mapping.rasters import BlockRows
from lib.mapping.vector import pixel_sides_m

NO_DATA, LOW_CONTRAST, STEEP_SLOPE, EXCLUDED = 1, 2, 4, 8
BLOCK = 64
CONTRAST_DB = 3.0
MIN_SHARE = 0.05
STEEP_SLOPE_DEG = 5.0


def low_contrast(water: np.ndarray, valid: np.ndarray, db: np.ndarray, block: int = BLOCK,
                 contrast_db: float = CONTRAST_DB, min_share: float = MIN_SHARE) -> np.ndarray:
    """Water pixels of the blocks (block x block, from column 0; rows as given) whose water is less than
    contrast_db darker than their land."""
    flagged = np.zeros(water.shape, bool)
    for c0 in range(0, water.shape[1], block):
        w, v, d = water[:, c0:c0 + block], valid[:, c0:c0 + block], db[:, c0:c0 + block]
        wet, dry = w & v, ~w & v
        least = min_share * max(int(v.sum()), 1)
        if wet.sum() < max(least, 1) or dry.sum() < max(least, 1):
            continue
        if d[dry].mean() - d[wet].mean() < contrast_db:
            flagged[:, c0:c0 + block] = wet
    return flagged


def slope_degrees(dem, grid: dict, row0: int, row1: int) -> np.ndarray:
    """Slope of rows [row0, row1) from the DEM reader, with one row of context on each side."""
    top, bottom = max(row0 - 1, 0), min(row1 + 1, grid["height"])
    height = dem.read(top, bottom).astype(np.float64)
    if height.shape[0] < 2 or height.shape[1] < 2:
        return np.zeros((row1 - row0, height.shape[1]))
    dx, dy = pixel_sides_m(grid, top, bottom)
    d_row, d_col = np.gradient(height)
    slope = np.degrees(np.arctan(np.hypot(d_col / dx[:, None], d_row / dy)))
    return slope[row0 - top:row0 - top + (row1 - row0)]


class FlagsWriter:
    """Collects finished strips until whole BLOCK-row blocks are there (the contrast test is per block),
    then writes their flags; closing it closes `writer`. span_db: the backscatter band's normalization span
    (the model input times it is backscatter in dB); dem: a reader on the grid or None; band: the index of
    the backscatter band among the engine's rows (a reader of several bands, a stacked model)."""

    def __init__(self, writer, span_db: float, grid: dict, dem=None, block: int = BLOCK, band: int = 0):
        self.writer, self.span_db, self.grid, self.dem, self.block = writer, span_db, grid, dem, block
        self.band = band
        self.rows = BlockRows(block)

    def add(self, row0: int, water: np.ndarray, input_invalid: np.ndarray, excluded: np.ndarray,
            image: np.ndarray) -> None:
        """Rows from row0 on: water, the input's no-data, the exclusion and the backscatter band's model input
        (the engine's normalized rows: the scene is not read again)."""
        self._flag(self.rows.add(row0, water, input_invalid, excluded, image))

    def _flag(self, taken) -> None:
        if taken is None:
            return
        row0, (water, invalid, excluded, image) = taken
        flags = np.where(invalid, NO_DATA, 0).astype(np.uint8)
        valid = ~invalid & ~excluded
        flags[low_contrast(water & valid, valid, image * self.span_db, self.block)] |= LOW_CONTRAST
        if self.dem is not None:
            flags[slope_degrees(self.dem, self.grid, row0, row0 + len(flags)) > STEEP_SLOPE_DEG] |= STEEP_SLOPE
        flags[excluded] |= EXCLUDED
        self.writer.write(row0, flags)

    def close(self) -> None:
        """Write the last rows (a part block) and close the writer underneath."""
        self._flag(self.rows.take_all())
        self.writer.close()
