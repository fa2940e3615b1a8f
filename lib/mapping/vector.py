"""Polygons of flood (or water) with true ground areas, written as GeoPackage or GeoJSON.

One polygon per 4-connected region of a class, holes kept (rasterio.features.shapes on the region
labels of cv2.connectedComponents, every class in one pass), with attributes class, area_m2 and
mean_probability. area_m2 is the
area on the ground of the region's pixels: from the geometry in a projected CRS (times the CRS unit's
size in metres), the geodesic area on the WGS84 ellipsoid (pyproj.Geod) in a geographic CRS. Regions
below --min-area-m2 are dropped (counted); --simplify-m simplifies the outlines as a coverage (shared
edges simplified once: neighbours never overlap; no outline moves more than --simplify-m, in pixels of
the longest pixel side, so also in a geographic CRS). GeoJSON is written in EPSG:4326 (RFC 7946), a
GeoPackage in the scene's CRS.

The class raster and the probabilities (as uint8 in 1/250 steps) are read whole: 10 bytes per pixel at
most (1 class, 1 probability, 4 labels of all classes, 4 of the class being labelled) while
polygonizing, 1 GB for a 10,000 x 10,000 scene.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.errors import InferenceError
from lib.mapping.flood import pixel_area_rows
from lib.mapping.rasters import is_georeferenced

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
PROBABILITY_SCALE = 250          # probabilities stored for the polygon means as uint8 p * 250
PROBABILITY_NODATA = 255
METRES_PER_DEGREE = 111_320.0    # of latitude, to turn --simplify-m into degrees in a geographic CRS
STRIP_ROWS = 1024


def vector_driver(path: Path) -> str:
    driver = VECTOR_DRIVERS.get(Path(path).suffix.lower())
    if driver is None:
        raise InferenceError(f"{path}: polygons are written as .gpkg (GeoPackage) or .geojson, by extension")
    return driver


def geometry_areas(geometries, crs) -> np.ndarray:
    """Ground areas in m2 of shapely geometries in `crs` (see the module docstring)."""
    import shapely
    if crs.is_geographic:
        from pyproj import Geod
        geod = Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geometries])
    return shapely.area(np.asarray(geometries, dtype=object)) * crs.linear_units_factor[1] ** 2


def region_stats(labels: np.ndarray, count: int, probability: np.ndarray, row_areas: np.ndarray):
    """Per label: (pixel-based ground area in m2, mean probability), accumulated over row strips."""
    area = np.zeros(count)
    probability_sum = np.zeros(count)
    pixels = np.zeros(count)
    for row0 in range(0, len(labels), STRIP_ROWS):
        strip = labels[row0:row0 + STRIP_ROWS]
        flat = strip.ravel()
        weights = np.repeat(row_areas[row0:row0 + len(strip)], strip.shape[1])
        area += np.bincount(flat, weights=weights, minlength=count)
        pixels += np.bincount(flat, minlength=count)
        probability_sum += np.bincount(flat, weights=probability[row0:row0 + len(strip)].ravel(), minlength=count)
    return area, probability_sum / np.maximum(pixels, 1) / PROBABILITY_SCALE


def region_labels(classes: np.ndarray, values: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 labels of the 4-connected regions of every class in `values`, numbered on from one class to
    the next, 0 elsewhere; the class of each label)."""
    import cv2
    combined = np.zeros(classes.shape, np.int32)
    kinds = [0]
    for value in values:
        count, labels = cv2.connectedComponents((classes == value).view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        np.add(labels, len(kinds) - 1, out=labels, where=labels > 0)
        np.maximum(combined, labels, out=combined)
        kinds += [value] * (count - 1)
        del labels
    return combined, np.asarray(kinds, np.int32)


def pixel_sides_m(grid: dict, row0: int, row1: int) -> tuple[np.ndarray, float]:
    """(east-west side in metres of the pixels of each row, north-south side in metres)."""
    transform, crs = grid["transform"], grid["crs"]
    dx, dy = abs(transform.a), abs(transform.e)
    if crs is not None and crs.is_geographic:
        lat = transform.f + transform.e * (np.arange(row0, row1) + 0.5)
        return dx * METRES_PER_DEGREE * np.cos(np.radians(lat)), dy * METRES_PER_DEGREE
    factor = crs.linear_units_factor[1] if crs is not None else 1.0
    return np.full(row1 - row0, dx * factor), dy * factor


CALIBRATION_REGIONS = 2000   # simplify_coverage finds its starting tolerance on about this many neighbouring regions


def simplify_coverage(geometries: np.ndarray, tolerance: float) -> np.ndarray:
    """Topology-preserving simplification of polygons that share boundaries (shapely.coverage_simplify:
    each shared edge simplified once, so neighbours never overlap nor open gaps). Its tolerance is not a
    distance, so it is lowered until no outline moves more than `tolerance` (Hausdorff distance); each try
    costs a whole simplification, so on a large coverage the first try is the one that passes on a window
    of about CALIBRATION_REGIONS regions (sample_window). `geometries` have a vertex at every pixel corner
    and the simplified outlines keep a subset of them, so the vertices' own Hausdorff distance is exact."""
    attempt = tolerance
    if len(geometries) > 2 * CALIBRATION_REGIONS:
        attempt = simplify_within(geometries[sample_window(geometries, CALIBRATION_REGIONS)], tolerance, attempt)[0]
    simplified = simplify_within(geometries, tolerance, attempt)[1]
    return geometries if simplified is None else simplified


def simplify_within(geometries: np.ndarray, tolerance: float, attempt: float) -> tuple[float, np.ndarray | None]:
    """(the first of attempt, 0.7 attempt, ... (12 tries) whose coverage simplification of `geometries` moves
    no outline more than `tolerance`, that simplification or None)."""
    import shapely
    for _ in range(12):
        simplified = shapely.coverage_simplify(geometries, attempt)
        if float(np.max(shapely.hausdorff_distance(geometries, simplified))) <= tolerance:
            return attempt, simplified
        attempt *= 0.7
    return attempt, None


def sample_window(geometries: np.ndarray, count: int) -> np.ndarray:
    """Indices of about `count` regions whose centres lie in a square window at the median of their centres."""
    import shapely
    centres = shapely.get_coordinates(shapely.centroid(geometries))
    middle = np.median(centres, axis=0)
    distance = np.max(np.abs(centres - middle), axis=1)  # Chebyshev: a square window
    return np.argsort(distance, kind="stable")[:count]


def polygonize(classes: np.ndarray, probability: np.ndarray, grid: dict, values: dict[int, str],
               min_area_m2: float = 0.0, simplify_m: float = 0.0):
    """(GeoDataFrame of class, area_m2, mean_probability, geometry for the regions of `values` in
    `classes`, number of regions dropped below min_area_m2). probability: uint8 p * PROBABILITY_SCALE.
    The regions of every class are traced in one pass, in pixel coordinates, so neighbours share their
    edges vertex for vertex (a valid coverage) and --simplify-m (metres; in pixels of the longest pixel
    side) simplifies each shared edge once; then they are placed on the grid."""
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes
    if not is_georeferenced(grid):
        raise InferenceError("polygons need a georeferenced scene (a CRS and a transform)")
    crs, transform = grid["crs"], grid["transform"]
    labels, kinds = region_labels(classes, values)
    pixel_area, mean_probability = region_stats(labels, len(kinds), probability,
                                                pixel_area_rows(grid, 0, classes.shape[0]))
    # a cheap first cut on the pixels' area, so tiny regions are never turned into polygons
    keep = pixel_area >= min_area_m2 * (1 - 1e-6)
    keep[0] = False  # label 0: the background
    dropped = int(len(kinds) - 1 - keep[1:].sum())
    traced = [(shapely.geometry.shape(geometry), int(label))
              for geometry, label in shapes(labels, mask=keep[labels], connectivity=4)]
    del labels
    pixels = np.asarray([g for g, _ in traced], dtype=object)
    found = np.asarray([label for _, label in traced], np.int64)
    affine = np.array([[transform.a, transform.b], [transform.d, transform.e]])
    offset = np.array([transform.c, transform.f])
    geometries = shapely.transform(pixels, lambda xy: xy @ affine.T + offset) if len(pixels) else pixels
    areas = geometry_areas(geometries, crs) if len(geometries) else np.zeros(0)
    kept = areas >= min_area_m2  # the exact test, on the area of the region's own outline
    dropped += int((~kept).sum())
    if simplify_m > 0 and kept.any():
        ew, ns = pixel_sides_m(grid, 0, classes.shape[0])
        # a vertex at every pixel corner, so neighbours' shared edges match vertex for vertex (GDAL's
        # outlines skip the corners where only the other side turns)
        pixels = simplify_coverage(shapely.segmentize(pixels[kept], 1.0), simplify_m / max(float(ew.max()), ns))
        geometries = shapely.transform(pixels, lambda xy: xy @ affine.T + offset)
    else:
        geometries = geometries[kept]
    frame = gpd.GeoDataFrame({"class": kinds[found[kept]], "area_m2": areas[kept],
                              "mean_probability": mean_probability[found[kept]].astype(np.float64)},
                             geometry=gpd.GeoSeries(list(geometries), crs=crs), crs=crs)
    return frame, dropped


def write_polygons(frame, path: Path, final_path: Path | None = None) -> None:
    """GeoPackage (scene CRS) or GeoJSON (EPSG:4326) chosen by the extension of `final_path` (the name
    the file will have; `path` may be its temporary name)."""
    driver = vector_driver(final_path or path)
    if driver == "GeoJSON":
        frame = frame.to_crs("EPSG:4326")
    frame.to_file(path, driver=driver, engine="pyogrio", layer=Path(final_path or path).stem,
                  geometry_type="Polygon")
