"""Sentinel-2 L1C reflectance B2, B3, B4 (value / 10000) of a synthetic landscape, from a simulated B8,
with clouds and cloud shadows in some patches, and NDVI / NDWI computed from them."""
from __future__ import annotations

import cv2
import numpy as np

from lib.synthetic.fields import quantile_threshold, smooth_field
from lib.synthetic.landscape import CROP, Landscape
from lib.synthetic.sentinel1 import SarRendering

CLOUD_PROBABILITY = 0.3
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


def render_optical(rng: np.random.Generator, scene: Landscape, sar: SarRendering, cloudy: bool):
    """({B2, B3, B4, NDVI, NDWI} float32 arrays, the cloud mask)."""
    refl = _surface_reflectance(rng, scene, sar)
    cloud = np.zeros(scene.shape, bool)
    if cloudy:
        refl, cloud = _clouds(rng, scene, refl)
    refl += rng.normal(0.0, 0.004, size=refl.shape).astype(np.float32)
    refl = np.clip(refl, 1e-4, 1.0)
    b2, b3, b4, b8 = refl
    ndvi = np.clip((b8 - b4) / np.maximum(b8 + b4, 1e-3), -1.0, 1.0)
    ndwi = np.clip((b3 - b8) / np.maximum(b3 + b8, 1e-3), -1.0, 1.0)
    return {"B2": b2, "B3": b3, "B4": b4, "NDVI": ndvi, "NDWI": ndwi}, cloud


def _surface_reflectance(rng: np.random.Generator, scene: Landscape, sar: SarRendering) -> np.ndarray:
    """B2, B3, B4, B8 of land cover, roads, water and flooded vegetation, seen through the atmosphere."""
    size, lc, green = scene.size, scene.land_cover, sar.green
    refl = np.empty((4, size, size), np.float32)
    for b in range(4):
        crop = green * REFL_VEGETATION[b] + (1 - green) * REFL_SOIL[b]
        table = np.array([0.0, REFL_FOREST[b], REFL_URBAN[b], REFL_SOIL[b]], np.float32)
        refl[b] = np.where(lc == CROP, crop, table[lc])
    refl *= 1.0 + 0.12 * smooth_field(rng, size, 0.08 * size) + 0.05 * sar.texture
    refl *= 1.0 + 0.12 * sar.slope  # sun illumination of slopes (roughly)
    turbid = np.clip(0.5 + 0.5 * smooth_field(rng, size, 0.2 * size), 0.0, 1.0) * scene.flood
    for b in range(4):
        refl[b][scene.road] = REFL_ROAD[b]
        w = REFL_WATER[b] * (1 - turbid) + REFL_TURBID_WATER[b] * turbid
        refl[b] = np.where(scene.water, w, refl[b])
        refl[b][sar.flooded_vegetation] = REFL_FLOODED_VEGETATION[b]
    refl += np.float32(rng.uniform(0.6, 1.4)) * np.array(PATH_REFLECTANCE, np.float32)[:, None, None]  # atmosphere
    return refl


def _clouds(rng: np.random.Generator, scene: Landscape, refl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clouds and their shadows over `refl`: (the reflectance, the cloud mask)."""
    size, f = scene.size, scene.f
    field = smooth_field(rng, size, rng.uniform(0.15, 0.35) * size) + 0.15 * smooth_field(rng, size, 12 * f)
    level = quantile_threshold(field, 1.0 - rng.uniform(0.1, 0.6))
    alpha = np.clip((field - level) / 0.8, 0.0, 1.0)
    dx, dy = rng.uniform(0.04, 0.12, 2) * size * rng.choice([-1, 1], 2)
    shadow_alpha = cv2.warpAffine(alpha, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size),
                                  borderMode=cv2.BORDER_REFLECT)
    refl *= 1.0 - 0.55 * shadow_alpha * (1.0 - alpha)
    brightness = rng.uniform(0.3, 0.5) + 0.1 * np.clip(field - level, 0.0, 1.0)
    tint = np.array([1.05, 1.02, 1.0, 0.97], np.float32)[:, None, None]
    refl = refl * (1.0 - alpha) + brightness * tint * alpha
    return refl, alpha > 0.5
