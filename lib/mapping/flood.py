"""Flood extent: water now that was not water before, against a pre-event scene and/or a reference water
raster, with an exclusion mask; class areas on the ground.

Classes of the flood raster (uint8, with a colour table):
    0 dry, 1 flood (water now; neither the pre-event scene nor the reference saw water there),
    2 permanent or pre-event water (water now and before), 3 water now without a change (with --pre and the
    change test, lib/mapping/change.py: water now, not before, no significant decrease in backscatter), 255 no-data (no valid post-event pixel, an
    excluded pixel, or water now where no pre-event / reference pixel says what was there before).
Without --pre and --reference-water every water pixel is class 1.

Other rasters are read on the post-event scene's grid through a rasterio WarpedVRT (any CRS, any
resolution; reprojected and resampled by windows, so bounded in memory; lib.mapping.rasters.open_aligned);
outside their extent they are no-data. The sink that writes the classes: lib.mapping.sinks.FloodSink.
"""
from __future__ import annotations

import numpy as np

from lib.mapping.rasters import is_georeferenced

DRY, FLOOD, BEFORE_WATER, NODATA = 0, 1, 2, 255
CLASS_NAMES = {DRY: "dry", FLOOD: "flood", BEFORE_WATER: "permanent_or_pre_event_water"}
COLORMAP = {DRY: (245, 245, 235, 255), FLOOD: (220, 30, 30, 255), BEFORE_WATER: (30, 90, 200, 255),
            3: (250, 190, 40, 255), NODATA: (0, 0, 0, 0)}  # 3: water now without a change (lib/mapping/change.py)
MASK_COLORMAP = {0: (245, 245, 235, 255), 1: (30, 90, 200, 255), NODATA: (0, 0, 0, 0)}


# ------------------------------------------------------------------------------------------ areas

def pixel_area_rows(grid: dict, row0: int, rows: int) -> np.ndarray | None:
    """Ground area in m2 of one pixel of each row [row0, row0 + rows): constant in a projected CRS (from
    the transform and the CRS's unit), geodesic on the WGS84 ellipsoid in a geographic CRS (it shrinks
    towards the poles); None without georeference."""
    if not is_georeferenced(grid):
        return None
    crs, transform = grid["crs"], grid["transform"]
    if crs.is_geographic:
        from pyproj import Geod
        geod = Geod(ellps="WGS84")
        areas = np.empty(rows)
        for i in range(rows):
            r = row0 + i
            corners = [transform @ (0, r), transform @ (1, r), transform @ (1, r + 1), transform @ (0, r + 1)]
            lons, lats = zip(*corners)
            areas[i] = abs(geod.polygon_area_perimeter(lons, lats)[0])
        return areas
    factor = crs.linear_units_factor[1]
    return np.full(rows, abs(transform.a * transform.e - transform.b * transform.d) * factor ** 2)


class ClassTally:
    """Pixel counts and ground areas per class, accumulated row strip by row strip."""

    def __init__(self, grid: dict, classes: dict[int, str]):
        self.grid, self.classes = grid, classes
        self.pixels = {c: 0 for c in [*classes, NODATA]}
        self.area_m2 = {c: 0.0 for c in classes} if is_georeferenced(grid) else None

    def add(self, row0: int, values: np.ndarray) -> None:
        areas = pixel_area_rows(self.grid, row0, len(values))
        for c in self.pixels:
            hits = values == c
            self.pixels[c] += int(hits.sum())
            if areas is not None and c in self.classes:
                self.area_m2[c] += float(hits.sum(axis=1) @ areas)

    def report(self) -> dict:
        total = sum(self.pixels.values())
        return {"classes": {name: {"value": c, "pixels": self.pixels[c],
                                   "area_km2": None if self.area_m2 is None else self.area_m2[c] / 1e6}
                            for c, name in self.classes.items()},
                "nodata_pixels": self.pixels[NODATA], "nodata_share": self.pixels[NODATA] / max(total, 1)}


# ---------------------------------------------------------------------------------------- the classes

def flood_classes(water: np.ndarray, invalid: np.ndarray, before_water: np.ndarray | None,
                  before_known: np.ndarray | None, excluded: np.ndarray | None) -> np.ndarray:
    """uint8 classes of rows (see the module docstring). before_water / before_known: water before, and
    where any pre-event or reference pixel is valid (None: no such layer, every water pixel is flood)."""
    classes = np.where(water, FLOOD, DRY).astype(np.uint8)
    if before_water is not None:
        classes[water & before_water] = BEFORE_WATER
        classes[water & ~before_known] = NODATA
    classes[invalid] = NODATA
    if excluded is not None:
        classes[excluded] = NODATA
    return classes


class BeforeLayers:
    """Pre-event water probability (already on the grid) and reference water, read row by row."""

    def __init__(self, pre_probability=None, reference=None, reference_threshold: float | None = None,
                 threshold: float = 0.5):
        self.pre, self.reference = pre_probability, reference
        self.reference_threshold, self.threshold = reference_threshold, threshold
        self._last: tuple = (None, {})  # the rows read last: the flood and layer sinks take the same rows

    @property
    def any(self) -> bool:
        return self.pre is not None or self.reference is not None

    def values(self, row0: int, row1: int) -> dict[str, np.ndarray]:
        """{"pre": ..., "reference": ...} of rows [row0, row1) as read, each layer read once for those rows."""
        layers = {"pre": self.pre, "reference": self.reference}
        key = (row0, row1, *map(id, layers.values()))  # a layer set later (the pre-event pass) is read anew
        if self._last[0] != key:
            self._last = (key, {name: layer.read(row0, row1) for name, layer in layers.items() if layer is not None})
        return self._last[1]

    def read(self, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
        """(water before, known before) for rows [row0, row1)."""
        water = known = None
        read = self.values(row0, row1)
        for name, is_water in (("pre", lambda v: v >= self.threshold), ("reference", self.reference_water)):
            if name not in read:
                continue
            values = read[name]
            valid = np.isfinite(values)
            wet = valid & is_water(np.nan_to_num(values, nan=0.0))
            water = wet if water is None else water | wet
            known = valid if known is None else known | valid
        return water, known

    def reference_water(self, values: np.ndarray) -> np.ndarray:
        """Reference water: non-zero, or >= --reference-threshold (JRC occurrence in percent: 50, say)."""
        if self.reference_threshold is None:
            return values != 0
        return values >= self.reference_threshold
