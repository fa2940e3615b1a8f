"""Sentinel-1 VV and VH backscatter (dB) of a synthetic landscape (lib/synthetic/landscape.py), with
multiplicative speckle (Gamma, L looks) and the confusers one threshold cannot resolve: dark non-water
(roads, tarmac, radar shadow behind bright slopes) and bright water (wind-roughened surfaces,
double-bounce flooded vegetation)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.synthetic.fields import parcels as draw_parcels
from lib.synthetic.fields import quantile_threshold, smooth_field
from lib.synthetic.landscape import CROP, FOREST, SOIL, URBAN, Landscape

LOOKS = 4.0            # equivalent number of looks of the speckle (Gamma shape)

# mean VV (dB) and VV - VH (dB) per land-cover class, at the reference incidence angle. With the other
# terms below they put land near the five real chips' median (VV -10.2, VH -16.6 dB; docs/real-sar.md);
# soil and crop VH raised by 0.5-1 dB (issue 23): demo land below -23 dB VH was 11 %, the chips' 5 %
LAND_VV = np.array([-10.0, -7.0, 1.0, -11.5], dtype=np.float32)
LAND_VV_MINUS_VH = np.array([7.0, 6.5, 8.5, 7.5], dtype=np.float32)
# incidence angle (degrees) across Sentinel-1 IW swaths, and how backscatter falls with it (dB / degree):
# steeply on calm water (specular), gently on land (literature: about -0.3..-0.5 and -0.1..-0.2)
INCIDENCE_RANGE = (30.0, 46.0)
INCIDENCE_REFERENCE = 38.0
WATER_DB_PER_DEGREE = -0.35
LAND_DB_PER_DEGREE = -0.12
# calm water level of a scene (VV dB at the reference angle) and its variation within a scene. Calm water
# in the literature: -18..-25 dB VV, -24..-32 dB VH; the five real chips (docs/real-sar.md section 3): water
# medians per chip VV -23..-10, VH -28..-21 dB, VV - VH 5..13 dB
CALM_WATER_VV = (-24.0, -16.0)
CALM_WATER_VV_MINUS_VH = (5.0, 9.5)
CALM_WATER_WITHIN_SCENE_DB = 2.5  # real chips: water VH interquartile range 3.6-7.7 dB per chip, with speckle
WINDY_SCENE_PROBABILITY = 0.5   # wet scenes with wind-roughened water
WINDY_WATER_VV = (-14.0, -7.0)  # wind-roughened water, as one real chip (VV median -10, VH -22 dB)
WINDY_WATER_VV_MINUS_VH = (9.0, 13.0)
# calibration and scene-level offset (dB, both bands): land medians of the five chips lie within +-2 dB
SCENE_OFFSET_DB = 2.0


@dataclass
class SarRendering:
    vv_db: np.ndarray           # with speckle
    vh_db: np.ndarray
    vv_mean_db: np.ndarray      # speckle-free
    vh_mean_db: np.ndarray
    texture: np.ndarray         # the fine texture, shared with the optical bands
    green: np.ndarray           # share of green crop per parcel
    slope: np.ndarray           # slope along the look direction (0 without hills)
    shadow: np.ndarray          # bool, radar shadow
    windy: np.ndarray           # float32, wind-roughened share of the water
    flooded_vegetation: np.ndarray  # bool


def render_sar(rng: np.random.Generator, scene: Landscape, looks: float = LOOKS) -> SarRendering:
    vv, vh, texture, green = _land_backscatter(rng, scene)
    shadow, slope = _hills(rng, scene, vv, vh, texture)
    road = scene.road
    road_db = rng.uniform(-21.0, -16.0)  # 10 m pixels mix tarmac with verges: rarely below -21 dB
    vv[road] = road_db + 0.5 * texture[road]
    vh[road] = road_db - rng.uniform(6.0, 8.0) + 0.5 * texture[road]
    water_vv, water_vh, windy, flooded_veg = _water_backscatter(rng, scene, texture)
    vv = np.where(scene.water, water_vv, vv)
    vh = np.where(scene.water, water_vh, vh)
    vv_mean, vh_mean = _acquisition(rng, scene, vv, vh, flooded_veg)
    # multiplicative speckle, independent per band
    size = scene.size
    gamma = rng.gamma(looks, 1.0 / looks, size=(2, size, size)).astype(np.float32)
    vv_db = 10.0 * np.log10(np.maximum(np.power(10.0, vv_mean / 10.0) * gamma[0], 1e-12))
    vh_db = 10.0 * np.log10(np.maximum(np.power(10.0, vh_mean / 10.0) * gamma[1], 1e-12))
    return SarRendering(vv_db=vv_db, vh_db=vh_db, vv_mean_db=vv_mean, vh_mean_db=vh_mean, texture=texture,
                        green=green, slope=slope, shadow=shadow, windy=windy, flooded_vegetation=flooded_veg)


def _land_backscatter(rng: np.random.Generator, scene: Landscape):
    """Mean VV and VH (dB) of the land, the fine texture and the share of green crop."""
    size, f, lc = scene.size, scene.f, scene.land_cover
    parcels = draw_parcels(rng, size, rng.uniform(0.08, 0.2) * size)
    texture = smooth_field(rng, size, 3.0 * f)
    vv = LAND_VV[lc] + 0.8 * smooth_field(rng, size, 0.1 * size) + 0.7 * texture
    vv += np.where(lc == CROP, 2.2 * parcels, 0.0).astype(np.float32)
    blocks = draw_parcels(rng, size, rng.uniform(6, 12) * f)  # city blocks, streets and open spaces
    vv += np.where(lc == URBAN, 2.5 * blocks + 1.0 * smooth_field(rng, size, 4 * f), 0.0).astype(np.float32)
    vv += np.where(lc == SOIL, 1.3 * smooth_field(rng, size, 0.12 * size), 0.0).astype(np.float32)
    green = 1.0 / (1.0 + np.exp(-2.0 * (parcels + 0.1)))  # share of green crop per parcel (the real chip: dry)
    vv_minus_vh = LAND_VV_MINUS_VH[lc] + np.where(lc == CROP, 1.5 - 2.5 * green, 0.0).astype(np.float32)
    vh = vv - vv_minus_vh + 0.8 * smooth_field(rng, size, 4 * f)
    # urban point scatterers
    points = (lc == URBAN) & (rng.random(scene.shape) < 0.03)
    vv[points] += 9.0
    vh[points] += 6.0
    return vv, vh, texture, green


def _hills(rng: np.random.Generator, scene: Landscape, vv: np.ndarray, vh: np.ndarray, texture: np.ndarray):
    """Foreshortening (bright slopes facing the sensor) and radar shadow behind hills, into vv and vh in
    place; returns (shadow, slope)."""
    size = scene.size
    shadow = np.zeros(scene.shape, bool)
    slope = np.zeros(scene.shape, np.float32)
    if rng.random() < 0.35:
        hills = smooth_field(rng, size, rng.uniform(0.08, 0.16) * size)
        zone = np.clip(smooth_field(rng, size, 0.4 * size) + rng.uniform(-0.3, 0.8), 0.0, 1.0)
        slope = cv2.Sobel(hills, cv2.CV_32F, 1, 0, ksize=3) * zone  # sensor looks along +x
        slope = np.clip(slope / max(quantile_threshold(np.abs(slope), 0.99), 1e-6), -1.5, 1.5)
        bright = np.clip((slope - 0.2) / 0.6, 0.0, 1.0)
        vv += 6.0 * bright
        vh += 4.5 * bright
        shadow = (slope < quantile_threshold(slope, rng.uniform(0.03, 0.08))) & (slope < -0.4) & ~scene.water
        vv[shadow] = rng.uniform(-23.0, -18.0) + 0.5 * texture[shadow]
        vh[shadow] = vv[shadow] - rng.uniform(5.0, 7.0)
    return shadow, slope


def _water_backscatter(rng: np.random.Generator, scene: Landscape, texture: np.ndarray):
    """VV and VH (dB) of calm water, wind-roughened water and flooded vegetation (double bounce); returns
    (water_vv, water_vh, windy, flooded_vegetation)."""
    size, f, water, shape = scene.size, scene.f, scene.water, scene.shape
    calm_db = rng.uniform(*CALM_WATER_VV)
    water_vv = calm_db + CALM_WATER_WITHIN_SCENE_DB * smooth_field(rng, size, 0.15 * size) + 0.3 * texture
    if water.any():  # shallow water and mixed pixels at the shore: brighter within a few pixels of land
        shore = cv2.distanceTransform(water.astype(np.uint8), cv2.DIST_L2, 3)
        water_vv = water_vv + rng.uniform(1.5, 4.5) * np.exp(-shore / (rng.uniform(1.5, 4.0) * f))
    water_vh = water_vv - rng.uniform(*CALM_WATER_VV_MINUS_VH)
    windy = np.zeros(shape, np.float32)
    if water.any() and rng.random() < WINDY_SCENE_PROBABILITY:
        gust = smooth_field(rng, size, rng.uniform(0.15, 0.3) * size)
        level = quantile_threshold(gust[water], 1.0 - rng.uniform(0.15, 0.5))
        windy = np.clip((gust - level) / 0.6, 0.0, 1.0) * water
        windy_vv = rng.uniform(*WINDY_WATER_VV) + 0.8 * smooth_field(rng, size, 8 * f)
        water_vv = water_vv * (1 - windy) + windy_vv * windy
        water_vh = water_vh * (1 - windy) + (windy_vv - rng.uniform(*WINDY_WATER_VV_MINUS_VH)) * windy
    flooded_veg = np.zeros(shape, bool)
    lc, flood = scene.land_cover, scene.flood
    if flood.any() and rng.random() < 0.45:
        zone = smooth_field(rng, size, 0.12 * size)
        vegetated = flood & ((lc == FOREST) | (lc == CROP))
        if vegetated.any():
            flooded_veg = vegetated & (zone > quantile_threshold(zone[vegetated], rng.uniform(0.4, 0.8)))
            water_vv = np.where(flooded_veg, rng.uniform(-4.0, 0.0) + 1.0 * texture, water_vv)
            water_vh = np.where(flooded_veg, rng.uniform(-15.0, -13.0) + 0.8 * texture, water_vh)
    return water_vv, water_vh, windy, flooded_veg


def _acquisition(rng: np.random.Generator, scene: Landscape, vv: np.ndarray, vh: np.ndarray,
                 flooded_veg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Incidence angle (the patch's place in the swath; it grows along +x, the range direction, by ~0.07
    degrees per km), a per-scene calibration offset and a slight blur (mixed pixels): the speckle-free
    mean VV and VH."""
    size, f = scene.size, scene.f
    incidence = rng.uniform(*INCIDENCE_RANGE) + np.linspace(-0.1, 0.1, size, dtype=np.float32)[None, :] * f
    tilt = incidence - INCIDENCE_REFERENCE
    calm = scene.water & ~flooded_veg
    vv = vv + np.where(calm, WATER_DB_PER_DEGREE, LAND_DB_PER_DEGREE) * tilt
    vh = vh + np.where(calm, 0.7 * WATER_DB_PER_DEGREE, LAND_DB_PER_DEGREE) * tilt
    offset = rng.uniform(-SCENE_OFFSET_DB, SCENE_OFFSET_DB)
    vv_mean = cv2.GaussianBlur((vv + offset).astype(np.float32), (0, 0), 0.7)
    vh_mean = cv2.GaussianBlur((vh + offset).astype(np.float32), (0, 0), 0.7)
    return vv_mean, vh_mean
