"""Rasters combined with a scene are compared by georeference, never paired by pixel position on faith:
one file per band must share the scene's grid (CRS, bounds, size: nothing is reprojected there); a
pre-event, reference or exclusion raster is reprojected onto the scene's grid when both have a CRS,
refused when only one has, and read by position only when neither is georeferenced and the sizes
match (with a warning). One that covers little or none of the scene, or has no valid value on it, is a
warning naming what was found."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from lib.errors import InferenceError

COVER_WARN_SHARE = 0.5   # warn when an auxiliary raster's extent covers less than this share of the scene


def georeferenced(crs, transform) -> bool:
    import rasterio
    return crs is not None and transform is not None and transform != rasterio.Affine.identity()


def bounds_of(grid: dict) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a grid dict (crs, transform, height, width)."""
    from rasterio.transform import array_bounds
    return array_bounds(grid["height"], grid["width"], grid["transform"])


def describe(crs, bounds) -> str:
    crs_text = "no CRS" if crs is None else crs.to_string()
    return f"{crs_text}, bounds " + ", ".join(f"{v:.6g}" for v in bounds) if bounds else crs_text


def check_same_grid(paths: list[Path], grids: list[dict]) -> None:
    """Band files of one scene: the same CRS, size and bounds (to half a pixel), else one error naming both."""
    first, base = paths[0], grids[0]
    for path, grid in zip(paths[1:], grids[1:]):
        if (grid["height"], grid["width"]) != (base["height"], base["width"]):
            raise InferenceError(f"{path} ({grid['width']} x {grid['height']} px) and {first} ({base['width']} x "
                                 f"{base['height']} px): the band files of a scene must share one grid")
        pair = [georeferenced(g["crs"], g["transform"]) for g in (base, grid)]
        if not any(pair):
            continue
        if not all(pair) or grid["crs"] != base["crs"]:
            raise InferenceError(f"{path} ({describe(grid['crs'], bounds_of(grid) if pair[1] else ())}) and {first} "
                                 f"({describe(base['crs'], bounds_of(base) if pair[0] else ())}): the band files of "
                                 f"a scene must share one CRS; their pixels would be fused by position")
        offset = max(abs(a - b) for a, b in zip(bounds_of(grid), bounds_of(base)))
        pixel = min(abs(base["transform"].a), abs(base["transform"].e))
        if offset > pixel / 2:
            raise InferenceError(f"{path} and {first} lie {offset:.6g} {units_of(base['crs'])} apart "
                                 f"({describe(grid['crs'], bounds_of(grid))} against "
                                 f"{describe(base['crs'], bounds_of(base))}): the band files of a scene must cover "
                                 f"the same ground; their pixels would be fused by position")


def units_of(crs) -> str:
    try:
        return crs.linear_units or "CRS units"
    except Exception:  # noqa: BLE001 - a CRS without units reads as CRS units
        return "CRS units"


def check_pairable(path: Path, role: str, source, grid: dict, warn: Callable[[str], None]) -> bool:
    """Whether `source` (an open rasterio dataset) is reprojected onto the scene's `grid` (True), or read by
    pixel position (False: neither is georeferenced, same size, with a warning); else one error."""
    scene_geo = georeferenced(grid.get("crs"), grid.get("transform"))
    source_geo = georeferenced(source.crs, source.transform)
    if scene_geo and source_geo:
        return True
    if scene_geo or source_geo:
        which, other = ("it has", "the scene has") if scene_geo else ("the scene has", "it has")
        raise InferenceError(f"{path}: the {role} raster cannot be placed on the scene: {which} no CRS and "
                             f"transform, {other} one; give both a georeference (gdal_edit.py -a_srs -a_ullr, "
                             f"rio edit-info) instead of pairing pixels by position")
    if (source.height, source.width) != (grid["height"], grid["width"]):
        raise InferenceError(f"{path}: {source.width} x {source.height} px without a common georeference with the "
                             f"scene ({grid['width']} x {grid['height']} px); give both a CRS, or the same size")
    warn(f"{path}: neither the {role} raster nor the scene has a CRS: paired by pixel position")
    return False


def covered_share(source, grid: dict) -> float:
    """Share of the scene's extent inside `source`'s extent, in the scene's CRS."""
    from rasterio.warp import transform_bounds
    west, south, east, north = transform_bounds(source.crs, grid["crs"], *source.bounds, densify_pts=21)
    s_west, s_south, s_east, s_north = bounds_of(grid)
    width = max(0.0, min(east, s_east) - max(west, s_west))
    height = max(0.0, min(north, s_north) - max(south, s_south))
    return width * height / max((s_east - s_west) * (s_north - s_south), 1e-300)


def check_coverage(path: Path, role: str, source, grid: dict, sample: np.ndarray,
                   warn: Callable[[str], None]) -> None:
    """Warn when the raster covers less than COVER_WARN_SHARE of the scene (none: it lies elsewhere), or has
    no valid value on the scene (`sample`: a decimated read of it on the scene's grid)."""
    if source is not None:
        share = covered_share(source, grid)
        found = f"its {describe(source.crs, source.bounds)}; the scene's {describe(grid['crs'], bounds_of(grid))}"
        if share <= 0:
            warn(f"{path}: the {role} raster does not overlap the scene ({found}); it adds nothing: no {role} "
                 f"value anywhere")
            return
        if share < COVER_WARN_SHARE:
            warn(f"{path}: the {role} raster covers only {100 * share:.0f}% of the scene ({found})")
    if not np.isfinite(sample).any():
        warn(f"{path}: the {role} raster has no valid value on the scene (all no-data where it overlaps)")
