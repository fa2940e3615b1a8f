"""Synthetic SAR flood patches that look and behave like real Sentinel-1 / Sentinel-2 flood data.

Every patch is a small scene built from smooth random fields (Gaussian-blurred noise, cv2):
land cover (cropland/grass parcels, forest, urban, bare soil), terrain, and water (sinuous rivers,
lakes, floods that spread from a river into low ground). From the scene we render

* Sentinel-1 VV and VH backscatter in dB, with multiplicative speckle (Gamma, L looks) and
  confusers a single threshold cannot resolve: dark non-water (roads, tarmac, radar shadow behind
  bright slopes), bright water (wind-roughened surfaces, double-bounce flooded vegetation);
* Sentinel-2 L1C reflectance B2, B3, B4 (value / 10000) from a simulated B8, with clouds and
  cloud shadows in some patches, and NDVI / NDWI computed from them;
* a label: 1 water, 0 not water, 255 no-data (a thin strip at an image border in ~10% of patches).

On-disk layout (the interface the training code reads):

    ROOT/train/img/{patch_id}_{band}.npy   band in VV, VH, B2, B3, B4, NDVI, NDWI (float32, size x size)
    ROOT/train/lab/{patch_id}.npy          uint8: 1 water, 0 not water, 255 no-data
    ROOT/val/img/{patch_id}_{band}.npy     band in VV, VH
    ROOT/val/lab/{patch_id}.npy

With folds=K > 0 the same patches go to ROOT/fold_1 .. ROOT/fold_K instead, each a full train/val
layout: fold k validates on the k-th chunk of the pool and trains on the rest.

Everything is deterministic per seed: patch i is drawn from its own generator seeded with
(seed, i), and the dataset-level choices (which patches are dry, which have no-data) from one
seeded with (seed,).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")
VAL_BANDS = ("VV", "VH")
PATCH_PREFIX = "demo_"
LOOKS = 4.0            # equivalent number of looks of the speckle (Gamma shape)
DRY_FRACTION = 0.2     # patches without any water
NODATA_FRACTION = 0.1  # patches with a no-data strip (label 255) at one border
CLOUD_PROBABILITY = 0.3
NODATA = 255

# land-cover classes
CROP, FOREST, URBAN, SOIL = 0, 1, 2, 3
# mean VV (dB) and VV - VH (dB) per land-cover class, at the reference incidence angle. With the other
# terms below they put land at the real chip's median (VV -9.4, VH -16.8 dB; docs/real-sar.md)
LAND_VV = np.array([-10.0, -7.0, 1.0, -12.0], dtype=np.float32)
LAND_VV_MINUS_VH = np.array([7.5, 6.5, 8.5, 8.5], dtype=np.float32)
# incidence angle (degrees) across Sentinel-1 IW swaths, and how backscatter falls with it (dB / degree):
# steeply on calm water (specular), gently on land (literature: about -0.3..-0.5 and -0.1..-0.2)
INCIDENCE_RANGE = (30.0, 46.0)
INCIDENCE_REFERENCE = 38.0
WATER_DB_PER_DEGREE = -0.35
LAND_DB_PER_DEGREE = -0.12
# calm water level of a scene (VV dB at the reference angle) and its variation within a scene: real calm
# water lies at -18..-25 dB VV; the real chip's water median is -18.4 dB VV, its quartiles -21.8 / -13.6
CALM_WATER_VV = (-22.5, -17.0)
CALM_WATER_WITHIN_SCENE_DB = 1.5
# Sentinel-2 reflectance (B2, B3, B4, B8). Clear water is darker than land in every band, as in real
# scenes (the Sen1Floods11 chip in ../shared: water ~0.10 vs land ~0.13 top-of-atmosphere reflectance).
REFL_VEGETATION = (0.04, 0.08, 0.05, 0.30)
REFL_FOREST = (0.03, 0.06, 0.03, 0.27)
REFL_SOIL = (0.11, 0.14, 0.17, 0.23)
REFL_URBAN = (0.13, 0.14, 0.15, 0.19)
REFL_ROAD = (0.09, 0.10, 0.11, 0.13)
REFL_WATER = (0.03, 0.035, 0.02, 0.015)
REFL_TURBID_WATER = (0.045, 0.06, 0.045, 0.03)
REFL_FLOODED_VEGETATION = (0.045, 0.075, 0.05, 0.13)
# Sentinel-2 L1C is top-of-atmosphere: path radiance lifts dark surfaces most (the real chip: water B2
# 0.097, B3 0.085, B4 0.077 against land 0.125, 0.124, 0.118)
PATH_REFLECTANCE = (0.06, 0.04, 0.03, 0.015)


# ----------------------------------------------------------------------------------------------
# random fields
# ----------------------------------------------------------------------------------------------

def smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance random field whose features are about `scale` pixels across.

    Large scales are drawn on a coarse grid, blurred and upsampled (fast); small ones are blurred
    at full resolution."""
    scale = max(float(scale), 1.0)
    if scale < 6.0:
        noise = rng.standard_normal((size, size), dtype=np.float32)
        field = cv2.GaussianBlur(noise, (0, 0), scale / 2.0, borderType=cv2.BORDER_REFLECT)
    else:
        n = max(3, int(round(2.0 * size / scale)))
        pad = 3
        noise = rng.standard_normal((n + 2 * pad, n + 2 * pad), dtype=np.float32)
        coarse = cv2.GaussianBlur(noise, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
        full = int(round(size * (n + 2 * pad) / n))
        big = cv2.resize(coarse, (full, full), interpolation=cv2.INTER_CUBIC)
        start = (full - size) // 2
        field = big[start:start + size, start:start + size]
    field = field - field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def _quantile_threshold(values: np.ndarray, fraction: float) -> float:
    """Value below which `fraction` of `values` lie."""
    flat = values.ravel()
    k = int(np.clip(round(fraction * (flat.size - 1)), 0, flat.size - 1))
    return float(np.partition(flat, k)[k])


def _parcels(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Piecewise-constant field of rotated rectangular parcels (agricultural fields), N(0, 1)."""
    n = max(2, int(math.ceil(2.0 * size / cell)))
    grid = rng.standard_normal((n, n)).astype(np.float32)
    big = cv2.resize(grid, (2 * size, 2 * size), interpolation=cv2.INTER_NEAREST)
    angle = rng.uniform(-40, 40)
    rot = cv2.getRotationMatrix2D((size, size), angle, 1.0)
    rot[:, 2] -= size / 2.0
    return cv2.warpAffine(big, rot, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)


def _meander(rng: np.random.Generator, size: int, amplitude: float, n: int = 64) -> np.ndarray:
    """Points of a sinuous line that crosses the whole patch at a random angle, int32 (n, 2)."""
    t = np.linspace(-0.25, 1.25, n) * size
    wavelength = rng.uniform(0.35, 1.2) * size
    walk = np.cumsum(rng.normal(0.0, 0.025 * size, n))
    walk = np.convolve(walk - walk.mean(), np.ones(7) / 7, mode="same")
    offset = (amplitude * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
              + rng.uniform(-0.25, 0.25) * size + walk)
    angle = rng.uniform(0, np.pi)
    u = t - size / 2.0
    x = size / 2.0 + u * np.cos(angle) - offset * np.sin(angle)
    y = size / 2.0 + u * np.sin(angle) + offset * np.cos(angle)
    return np.stack([x, y], axis=1)


def _draw_path(mask: np.ndarray, points: np.ndarray, widths: np.ndarray) -> None:
    """Draw a polyline of varying width (round joints) into a uint8 mask, in place."""
    shift = 4  # sub-pixel precision of cv2 drawing
    pts = np.round(points * (1 << shift)).astype(np.int64)
    for (x0, y0), (x1, y1), w in zip(pts[:-1], pts[1:], widths):
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, max(1, int(round(w))), cv2.LINE_8, shift)


# ----------------------------------------------------------------------------------------------
# one scene
# ----------------------------------------------------------------------------------------------

def _land_cover(rng: np.random.Generator, size: int, f: float) -> np.ndarray:
    bias = np.array([rng.normal(0.6, 0.5), rng.normal(0.0, 0.6), rng.normal(-1.1, 0.5), rng.normal(-0.5, 0.5)])
    scales = (0.35, 0.3, 0.18, 0.25)
    fields = np.stack([smooth_field(rng, size, s * 256 * f) + b for s, b in zip(scales, bias)])
    return np.argmax(fields, axis=0).astype(np.uint8)


def _water(rng: np.random.Generator, size: int, f: float, terrain: np.ndarray, dry: bool):
    """Masks (bool) of river, lake and flood water, and the terrain carved by the river valley."""
    river = np.zeros((size, size), np.uint8)
    lake = np.zeros((size, size), bool)
    flood = np.zeros((size, size), bool)
    if dry:
        return river.astype(bool), lake, flood, terrain
    has_river = rng.random() < 0.75
    has_lake = rng.random() < (0.5 if has_river else 1.0)
    has_flood = has_river and rng.random() < 0.75
    if has_river:
        points = _meander(rng, size, rng.uniform(0.04, 0.18) * size)
        base = rng.uniform(5.0, 18.0) * f
        widths = base * (1.0 + 0.35 * np.sin(np.linspace(0, rng.uniform(2, 8), len(points)) + rng.uniform(0, 6)))
        _draw_path(river, points, widths)
        if rng.random() < 0.4:  # a thinner tributary
            trib = _meander(rng, size, rng.uniform(0.02, 0.1) * size, n=40)
            _draw_path(river, trib, np.full(len(trib), max(1.5, 0.4 * base)))
        dist = cv2.distanceTransform((1 - river).astype(np.uint8), cv2.DIST_L2, 3)
        terrain = terrain - 1.2 * np.exp(-dist / (0.12 * size))  # valley floor around the river
    if has_lake:
        blobs = smooth_field(rng, size, rng.uniform(0.12, 0.25) * size) - 0.5 * terrain
        lake = blobs > _quantile_threshold(blobs, 1.0 - rng.uniform(0.05, 0.2))
    river = river.astype(bool)
    if has_flood:
        dist = cv2.distanceTransform((~river).astype(np.uint8), cv2.DIST_L2, 3)
        cost = terrain + dist / (0.3 * size) + 0.35 * smooth_field(rng, size, 10 * f)
        candidates = cost < _quantile_threshold(cost, rng.uniform(0.15, 0.45))
        count, comp = cv2.connectedComponents((candidates | river).astype(np.uint8), connectivity=8)
        keep = np.zeros(count, bool)
        keep[np.unique(comp[river])] = True
        keep[0] = False
        flood = keep[comp] & ~river
    return river, lake, flood, terrain


def generate_patch(rng: np.random.Generator, size: int = 256, *, dry: bool = False, nodata: bool = False,
                   cloudy: bool | None = None, looks: float = LOOKS):
    """One synthetic patch.

    Returns (bands, label, info): bands maps VV, VH, B2, B3, B4, NDVI, NDWI to float32 (size, size)
    arrays; label is uint8 (1 water, 0 not water, 255 no-data); info holds boolean masks of the
    scene parts (water, calm_water, windy_water, flooded_vegetation, road, shadow, cloud) and the
    speckle-free mean backscatter (vv_mean_db, vh_mean_db).
    """
    f = size / 256.0
    shape = (size, size)
    if cloudy is None:
        cloudy = rng.random() < CLOUD_PROBABILITY

    # --- scene -------------------------------------------------------------------------------
    terrain = smooth_field(rng, size, 0.45 * size) + 0.4 * smooth_field(rng, size, 0.15 * size)
    lc = _land_cover(rng, size, f)
    river, lake, flood, terrain = _water(rng, size, f, terrain, dry)
    water = river | lake | flood

    road = np.zeros(shape, np.uint8)
    if rng.random() < 0.6:
        for _ in range(rng.integers(1, 4)):
            pts = _meander(rng, size, rng.uniform(0.0, 0.05) * size, n=12)
            _draw_path(road, pts, np.full(len(pts), rng.uniform(1.0, 2.5) * f))
    if rng.random() < 0.12:  # tarmac: an airfield apron or a big car park
        c = rng.uniform(0.2, 0.8, 2) * size
        box = cv2.boxPoints(((c[0], c[1]), tuple(rng.uniform(0.08, 0.25, 2) * size), rng.uniform(0, 90)))
        cv2.fillPoly(road, [np.round(box).astype(np.int32)], 1)
    road = road.astype(bool) & ~water

    # --- SAR mean backscatter (dB) ---------------------------------------------------------------
    parcels = _parcels(rng, size, rng.uniform(0.08, 0.2) * size)
    texture = smooth_field(rng, size, 3.0 * f)
    vv = LAND_VV[lc] + 0.8 * smooth_field(rng, size, 0.1 * size) + 0.7 * texture
    vv += np.where(lc == CROP, 2.2 * parcels, 0.0).astype(np.float32)
    blocks = _parcels(rng, size, rng.uniform(6, 12) * f)  # city blocks, streets and open spaces
    vv += np.where(lc == URBAN, 2.5 * blocks + 1.0 * smooth_field(rng, size, 4 * f), 0.0).astype(np.float32)
    vv += np.where(lc == SOIL, 1.3 * smooth_field(rng, size, 0.12 * size), 0.0).astype(np.float32)
    green = 1.0 / (1.0 + np.exp(-2.0 * (parcels + 0.1)))  # share of green crop per parcel (the real chip: dry)
    vv_minus_vh = LAND_VV_MINUS_VH[lc] + np.where(lc == CROP, 1.5 - 2.5 * green, 0.0).astype(np.float32)
    vh = vv - vv_minus_vh + 0.8 * smooth_field(rng, size, 4 * f)
    # urban point scatterers
    points = (lc == URBAN) & (rng.random(shape) < 0.03)
    vv[points] += 9.0
    vh[points] += 6.0

    # hills: foreshortening (bright slopes facing the sensor) and radar shadow behind them
    shadow = np.zeros(shape, bool)
    slope = np.zeros(shape, np.float32)
    if rng.random() < 0.35:
        hills = smooth_field(rng, size, rng.uniform(0.08, 0.16) * size)
        zone = np.clip(smooth_field(rng, size, 0.4 * size) + rng.uniform(-0.3, 0.8), 0.0, 1.0)
        slope = cv2.Sobel(hills, cv2.CV_32F, 1, 0, ksize=3) * zone  # sensor looks along +x
        slope = np.clip(slope / max(_quantile_threshold(np.abs(slope), 0.99), 1e-6), -1.5, 1.5)
        bright = np.clip((slope - 0.2) / 0.6, 0.0, 1.0)
        vv += 6.0 * bright
        vh += 4.5 * bright
        shadow = (slope < _quantile_threshold(slope, rng.uniform(0.03, 0.08))) & (slope < -0.4) & ~water
        vv[shadow] = rng.uniform(-23.0, -18.0) + 0.5 * texture[shadow]
        vh[shadow] = vv[shadow] - rng.uniform(5.0, 7.0)

    road_db = rng.uniform(-21.0, -16.0)  # 10 m pixels mix tarmac with verges: rarely below -21 dB
    vv[road] = road_db + 0.5 * texture[road]
    vh[road] = road_db - rng.uniform(6.0, 8.0) + 0.5 * texture[road]

    # water: calm, wind-roughened, and flooded vegetation (double bounce)
    calm_db = rng.uniform(*CALM_WATER_VV)
    water_vv = calm_db + CALM_WATER_WITHIN_SCENE_DB * smooth_field(rng, size, 0.15 * size) + 0.3 * texture
    if water.any():  # shallow water and mixed pixels at the shore: brighter within a few pixels of land
        shore = cv2.distanceTransform(water.astype(np.uint8), cv2.DIST_L2, 3)
        water_vv = water_vv + rng.uniform(1.5, 4.5) * np.exp(-shore / (rng.uniform(1.5, 4.0) * f))
    water_vh = water_vv - rng.uniform(6.5, 9.0)
    windy = np.zeros(shape, np.float32)
    if water.any() and rng.random() < 0.5:
        gust = smooth_field(rng, size, rng.uniform(0.15, 0.3) * size)
        level = _quantile_threshold(gust[water], 1.0 - rng.uniform(0.15, 0.5))
        windy = np.clip((gust - level) / 0.6, 0.0, 1.0) * water
        windy_vv = rng.uniform(-15.0, -9.0) + 0.8 * smooth_field(rng, size, 8 * f)
        water_vv = water_vv * (1 - windy) + windy_vv * windy
        water_vh = water_vh * (1 - windy) + (windy_vv - rng.uniform(8.0, 10.0)) * windy
    flooded_veg = np.zeros(shape, bool)
    if flood.any() and rng.random() < 0.45:
        zone = smooth_field(rng, size, 0.12 * size)
        vegetated = flood & ((lc == FOREST) | (lc == CROP))
        if vegetated.any():
            flooded_veg = vegetated & (zone > _quantile_threshold(zone[vegetated], rng.uniform(0.4, 0.8)))
            water_vv = np.where(flooded_veg, rng.uniform(-4.0, 0.0) + 1.0 * texture, water_vv)
            water_vh = np.where(flooded_veg, rng.uniform(-15.0, -13.0) + 0.8 * texture, water_vh)
    vv = np.where(water, water_vv, vv)
    vh = np.where(water, water_vh, vh)

    # acquisition: incidence angle (the patch's place in the swath; it grows along +x, the range
    # direction, by ~0.07 degrees per km), per-scene calibration offset, slight blur (mixed pixels)
    incidence = rng.uniform(*INCIDENCE_RANGE) + np.linspace(-0.1, 0.1, size, dtype=np.float32)[None, :] * f
    tilt = incidence - INCIDENCE_REFERENCE
    calm = water & ~flooded_veg
    vv = vv + np.where(calm, WATER_DB_PER_DEGREE, LAND_DB_PER_DEGREE) * tilt
    vh = vh + np.where(calm, 0.7 * WATER_DB_PER_DEGREE, LAND_DB_PER_DEGREE) * tilt
    offset = rng.normal(0.0, 0.8)
    vv_mean = cv2.GaussianBlur((vv + offset).astype(np.float32), (0, 0), 0.7)
    vh_mean = cv2.GaussianBlur((vh + offset).astype(np.float32), (0, 0), 0.7)

    # multiplicative speckle, independent per band
    gamma = rng.gamma(looks, 1.0 / looks, size=(2, size, size)).astype(np.float32)
    vv_db = 10.0 * np.log10(np.maximum(np.power(10.0, vv_mean / 10.0) * gamma[0], 1e-12))
    vh_db = 10.0 * np.log10(np.maximum(np.power(10.0, vh_mean / 10.0) * gamma[1], 1e-12))

    # --- Sentinel-2 reflectance ------------------------------------------------------------------
    refl = np.empty((4, size, size), np.float32)
    for b in range(4):
        crop = green * REFL_VEGETATION[b] + (1 - green) * REFL_SOIL[b]
        table = np.array([0.0, REFL_FOREST[b], REFL_URBAN[b], REFL_SOIL[b]], np.float32)
        refl[b] = np.where(lc == CROP, crop, table[lc])
    refl *= 1.0 + 0.12 * smooth_field(rng, size, 0.08 * size) + 0.05 * texture
    refl *= 1.0 + 0.12 * slope  # sun illumination of slopes (roughly)
    turbid = np.clip(0.5 + 0.5 * smooth_field(rng, size, 0.2 * size), 0.0, 1.0) * flood
    for b in range(4):
        refl[b][road] = REFL_ROAD[b]
        w = REFL_WATER[b] * (1 - turbid) + REFL_TURBID_WATER[b] * turbid
        refl[b] = np.where(water, w, refl[b])
        refl[b][flooded_veg] = REFL_FLOODED_VEGETATION[b]
    refl += np.float32(rng.uniform(0.6, 1.4)) * np.array(PATH_REFLECTANCE, np.float32)[:, None, None]  # atmosphere
    cloud = np.zeros(shape, bool)
    if cloudy:
        field = smooth_field(rng, size, rng.uniform(0.15, 0.35) * size) + 0.15 * smooth_field(rng, size, 12 * f)
        level = _quantile_threshold(field, 1.0 - rng.uniform(0.1, 0.6))
        alpha = np.clip((field - level) / 0.8, 0.0, 1.0)
        dx, dy = rng.uniform(0.04, 0.12, 2) * size * rng.choice([-1, 1], 2)
        shadow_alpha = cv2.warpAffine(alpha, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size),
                                      borderMode=cv2.BORDER_REFLECT)
        refl *= 1.0 - 0.55 * shadow_alpha * (1.0 - alpha)
        brightness = rng.uniform(0.3, 0.5) + 0.1 * np.clip(field - level, 0.0, 1.0)
        tint = np.array([1.05, 1.02, 1.0, 0.97], np.float32)[:, None, None]
        refl = refl * (1.0 - alpha) + brightness * tint * alpha
        cloud = alpha > 0.5
    refl += rng.normal(0.0, 0.004, size=refl.shape).astype(np.float32)
    refl = np.clip(refl, 1e-4, 1.0)
    b2, b3, b4, b8 = refl
    ndvi = np.clip((b8 - b4) / np.maximum(b8 + b4, 1e-3), -1.0, 1.0)
    ndwi = np.clip((b3 - b8) / np.maximum(b3 + b8, 1e-3), -1.0, 1.0)

    # --- label ---------------------------------------------------------------------------------
    label = water.astype(np.uint8)
    if nodata:
        width = max(1, int(round(rng.uniform(2, 12) * f)))
        side = rng.integers(4)
        if side == 0:
            label[:width] = NODATA
        elif side == 1:
            label[-width:] = NODATA
        elif side == 2:
            label[:, :width] = NODATA
        else:
            label[:, -width:] = NODATA

    bands = {"VV": vv_db, "VH": vh_db, "B2": b2, "B3": b3, "B4": b4, "NDVI": ndvi, "NDWI": ndwi}
    bands = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in bands.items()}
    info = {"water": water, "calm_water": water & (windy == 0) & ~flooded_veg, "windy_water": windy > 0,
            "flooded_vegetation": flooded_veg, "road": road, "shadow": shadow, "cloud": cloud,
            "land_cover": lc, "vv_mean_db": vv_mean, "vh_mean_db": vh_mean}
    return bands, label, info


# ----------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------

def patch_id(index: int) -> str:
    return f"{PATCH_PREFIX}{index:05d}"


def _check_foreign_data(root: Path, overwrite: bool) -> int:
    """Refuse a root that holds other data than demo patches (a prepared real dataset): the demo would be
    mixed into it. With `overwrite`, the other patches of the img/ and lab/ folders are removed; returns
    how many. A file, not a folder, is refused either way."""
    from lib.errors import OutputError
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: is a file, not a folder; give a dataset folder with --out")
    foreign = sorted(p for p in root.rglob("*.npy") if not p.name.startswith(PATCH_PREFIX)) if root.is_dir() else []
    if not foreign:
        return 0
    if not overwrite:
        raise OutputError(f"{root}: holds {len(foreign)} patch file(s) that are not demo data (e.g. {foreign[0]}); "
                          f"demo patches would be mixed into that dataset. Give another --out, or --overwrite "
                          f"to replace the dataset (its patches in img/ and lab/ folders are deleted)")
    removed = [p for p in foreign if p.parent.name in ("img", "lab")]
    for path in removed:
        path.unlink()
    return len(removed)


def _prepare_split(split_dir: Path) -> tuple[Path, Path]:
    """Create split/img and split/lab; remove demo files of an earlier run (never other files)."""
    img, lab = split_dir / "img", split_dir / "lab"
    for folder in (img, lab):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{PATCH_PREFIX}*.npy"):
            stale.unlink()
    return img, lab


def _write(img: Path, lab: Path, pid: str, bands: dict, label: np.ndarray, band_names) -> None:
    for name in band_names:
        np.save(img / f"{pid}_{name}.npy", bands[name])
    np.save(lab / f"{pid}.npy", label)


def make_demo_dataset(root, n_train: int = 120, n_val: int = 30, folds: int = 0, seed: int = 42,
                      size: int = 256, overwrite: bool = False) -> dict:
    """Write a synthetic dataset under `root` (see the module docstring for the layout). A root holding
    other patches than demo ones is refused (OutputError), unless `overwrite` (which deletes them).

    folds=0: ROOT/train holds patches 0 .. n_train-1, ROOT/val the next n_val.
    folds=K>0: the n_train + n_val patches form a pool; ROOT/fold_k/val holds the k-th of K
    contiguous chunks of it and ROOT/fold_k/train the rest.

    Returns a summary: root, n_patches, n_train, n_val, folds, size, seed, water_fraction (of the
    labelled pixels), dry_patches, nodata_patches, cloudy_patches, vv_threshold_iou (best single
    global VV threshold over the pool), splits (folder -> number of patches), seconds.
    """
    start = time.perf_counter()
    root = Path(root)
    n_train, n_val, folds, size = int(n_train), int(n_val), int(folds), int(size)
    total = n_train + n_val
    if n_train < 0 or n_val < 0 or total < 1:
        raise ValueError(f"need at least one patch, got n_train={n_train}, n_val={n_val}")
    if folds < 0 or folds > total:
        raise ValueError(f"folds must be between 0 and the number of patches ({total}), got {folds}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    removed = _check_foreign_data(root, overwrite)

    plan = np.random.default_rng([seed])
    dry = np.zeros(total, bool)
    n_dry = int(round(DRY_FRACTION * total))
    if total >= 3:
        n_dry = max(1, n_dry)
    dry[plan.permutation(total)[:n_dry]] = True
    nodata = np.zeros(total, bool)
    nodata[plan.permutation(total)[:max(1, int(round(NODATA_FRACTION * total)))]] = True

    # where each patch goes: list of (img_dir, lab_dir, band_names) per patch
    targets: list[list[tuple[Path, Path, tuple]]] = [[] for _ in range(total)]
    splits: dict[str, int] = {}
    if folds == 0:
        layout = {"train": range(0, n_train), "val": range(n_train, total)}
        for split, members in layout.items():
            img, lab = _prepare_split(root / split)
            splits[split] = len(members)
            for i in members:
                targets[i].append((img, lab, TRAIN_BANDS if split == "train" else VAL_BANDS))
    else:
        chunks = np.array_split(np.arange(total), folds)
        for k, chunk in enumerate(chunks, start=1):
            in_val = np.zeros(total, bool)
            in_val[chunk] = True
            for split, members in (("train", np.flatnonzero(~in_val)), ("val", chunk)):
                img, lab = _prepare_split(root / f"fold_{k}" / split)
                splits[f"fold_{k}/{split}"] = len(members)
                for i in members:
                    targets[i].append((img, lab, TRAIN_BANDS if split == "train" else VAL_BANDS))

    edges = np.arange(-40.0, 15.01, 0.25)
    hist_water = np.zeros(len(edges) - 1)
    hist_land = np.zeros(len(edges) - 1)
    water_pixels = valid_pixels = 0
    dry_patches = cloudy_patches = 0
    for i in range(total):
        rng = np.random.default_rng([seed, i])
        bands, label, info = generate_patch(rng, size, dry=bool(dry[i]), nodata=bool(nodata[i]))
        for img, lab, names in targets[i]:
            _write(img, lab, patch_id(i), bands, label, names)
        n_water = int((label == 1).sum())
        water_pixels += n_water
        valid_pixels += int((label != NODATA).sum())
        dry_patches += n_water == 0
        cloudy_patches += bool(info["cloud"].any())
        vv = np.clip(bands["VV"], edges[0], edges[-1] - 1e-3)
        hist_water += np.histogram(vv[label == 1], edges)[0]
        hist_land += np.histogram(vv[label == 0], edges)[0]

    tp = np.cumsum(hist_water)  # water pixels below each upper edge
    fp = np.cumsum(hist_land)
    iou = tp / np.maximum(hist_water.sum() + fp, 1)
    return {"root": str(root), "n_patches": total, "n_train": n_train, "n_val": n_val, "folds": folds,
            "size": size, "seed": seed, "water_fraction": water_pixels / max(valid_pixels, 1),
            "dry_patches": dry_patches, "nodata_patches": int(nodata.sum()), "cloudy_patches": cloudy_patches,
            "vv_threshold_iou": float(iou.max()), "vv_threshold_db": float(edges[1:][iou.argmax()]),
            "splits": splits, "removed": removed, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------------------
# figure
# ----------------------------------------------------------------------------------------------

def _figure_split(root: Path) -> Path:
    for candidate in (root / "train", root / "fold_1" / "train"):
        if (candidate / "img").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no train/ or fold_1/train/ folder with demo patches")


def _pick_figure_patches(split: Path, ids: list[str], n: int) -> tuple[list[str], dict]:
    """Up to n patches with a moderate amount of water, preferring ones that show bright water,
    dark land (shadow, roads, tarmac) and clouds; the rest in id order."""
    stats = {}
    for pid in ids:
        lab = np.load(split / "lab" / f"{pid}.npy")
        vv = np.load(split / "img" / f"{pid}_VV.npy")
        b2 = np.load(split / "img" / f"{pid}_B2.npy")
        water, land = lab == 1, lab == 0
        stats[pid] = {"water": float(water.mean()),
                      "bright_water": float((water & (vv > -12)).sum() / max(water.sum(), 1)),
                      "dark_land": float((land & (vv < -20)).sum() / max(land.sum(), 1)),
                      "cloud": float((b2 > 0.25).mean())}
    wet = [pid for pid in ids if 0.1 <= stats[pid]["water"] <= 0.6]
    chosen: list[str] = []
    for key in ("bright_water", "dark_land", "cloud"):
        pool = [pid for pid in wet if pid not in chosen]
        if pool and len(chosen) < n:
            chosen.append(max(pool, key=lambda pid: stats[pid][key]))
    chosen += [pid for pid in wet + ids if pid not in chosen][:max(0, n - len(chosen))]
    return sorted(dict.fromkeys(chosen))[:n], stats


def render_demo_figure(root, out_png, n: int = 4, dpi: int = 72) -> Path:
    """Draw `n` training patches of `root` (VV, VH, RGB of B4/B3/B2, NDWI, label) into `out_png`.

    Chooses patches that show the confusers (bright water, dark land, clouds). The PNG is
    palette-quantized (256 colours) to stay small. Returns the path written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    split = _figure_split(Path(root))
    ids = sorted(p.stem for p in (split / "lab").glob(f"{PATCH_PREFIX}*.npy"))
    if not ids:
        raise FileNotFoundError(f"{split / 'lab'}: no demo labels")
    chosen, stats = _pick_figure_patches(split, ids, max(1, int(n)))

    label_cmap = ListedColormap(["#c8b98a", "#1f5fbf", "#d62728"])  # land, water, no-data
    columns = ("VV (dB)", "VH (dB)", "RGB (B4 B3 B2)", "NDWI", "label (red: no-data)")
    fig, axes = plt.subplots(len(chosen), 5, figsize=(10, 2.05 * len(chosen) + 0.4),
                             dpi=dpi, squeeze=False)
    for row, pid in enumerate(chosen):
        load = lambda band: np.load(split / "img" / f"{pid}_{band}.npy")  # noqa: E731
        lab = np.load(split / "lab" / f"{pid}.npy")
        rgb = np.clip(np.stack([load("B4"), load("B3"), load("B2")], axis=-1) * 3.5, 0.0, 1.0) ** 0.8
        panels = [(load("VV"), dict(cmap="gray", vmin=-25, vmax=0)),
                  (load("VH"), dict(cmap="gray", vmin=-32, vmax=-7)),
                  (rgb, {}),
                  (load("NDWI"), dict(cmap="RdBu", vmin=-1, vmax=1)),
                  (np.where(lab == NODATA, 2, lab), dict(cmap=label_cmap, vmin=0, vmax=2))]
        for col, (image, style) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(f"{pid}\nwater {100 * stats[pid]['water']:.0f}%", fontsize=8)
    fig.suptitle("Synthetic demo patches (make_demo_data.py): VV/VH in dB with speckle, "
                 "Sentinel-2 reflectance, label", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        image = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
        image.save(out_png, optimize=True)
    except ImportError:
        fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
