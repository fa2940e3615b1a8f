"""The geometry of one synthetic scene (lib/synthetic/demo.py): terrain, land cover, water (rivers, lakes,
floods that spread from a river into low ground) and roads. The sensors render it (sentinel1.py,
sentinel2.py)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.synthetic.fields import draw_path, meander, quantile_threshold, smooth_field

# land-cover classes
CROP, FOREST, URBAN, SOIL = 0, 1, 2, 3
# wet scenes whose lake covers most of the patch (real flood chips are up to 98 % water; a model that only
# ever saw water as the minority of a patch calls a patch of open water land)
WIDE_WATER_PROBABILITY = 0.3
WIDE_WATER_SHARE = (0.4, 0.9)


@dataclass
class Landscape:
    size: int
    f: float                # size / 256: the feature scales are set for 256-pixel patches
    terrain: np.ndarray     # float32 height field (the river carves its valley)
    land_cover: np.ndarray  # uint8 class per pixel (CROP, FOREST, URBAN, SOIL)
    flood: np.ndarray       # bool, the flood water (the rest of `water` is river and lake)
    water: np.ndarray       # bool, every water pixel (the label)
    road: np.ndarray        # bool, roads and tarmac (never on water)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)


def draw_landscape(rng: np.random.Generator, size: int, dry: bool) -> Landscape:
    f = size / 256.0
    terrain = smooth_field(rng, size, 0.45 * size) + 0.4 * smooth_field(rng, size, 0.15 * size)
    lc = _land_cover(rng, size, f)
    river, lake, flood, terrain = _water(rng, size, f, terrain, dry)
    water = river | lake | flood
    road = _roads(rng, size, f) & ~water
    return Landscape(size=size, f=f, terrain=terrain, land_cover=lc, flood=flood, water=water, road=road)


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
    wide = rng.random() < WIDE_WATER_PROBABILITY
    has_lake = wide or rng.random() < (0.5 if has_river else 1.0)
    has_flood = has_river and rng.random() < 0.75
    if has_river:
        points = meander(rng, size, rng.uniform(0.04, 0.18) * size)
        base = rng.uniform(5.0, 18.0) * f
        widths = base * (1.0 + 0.35 * np.sin(np.linspace(0, rng.uniform(2, 8), len(points)) + rng.uniform(0, 6)))
        draw_path(river, points, widths)
        if rng.random() < 0.4:  # a thinner tributary
            trib = meander(rng, size, rng.uniform(0.02, 0.1) * size, n=40)
            draw_path(river, trib, np.full(len(trib), max(1.5, 0.4 * base)))
        dist = cv2.distanceTransform((1 - river).astype(np.uint8), cv2.DIST_L2, 3)
        terrain = terrain - 1.2 * np.exp(-dist / (0.12 * size))  # valley floor around the river
    if has_lake:
        blobs = smooth_field(rng, size, rng.uniform(0.12, 0.25) * size) - 0.5 * terrain
        share = rng.uniform(*WIDE_WATER_SHARE) if wide else rng.uniform(0.05, 0.2)
        lake = blobs > quantile_threshold(blobs, 1.0 - share)
    river = river.astype(bool)
    if has_flood:
        flood = _flood(rng, size, f, terrain, river)
    return river, lake, flood, terrain


def _flood(rng: np.random.Generator, size: int, f: float, terrain: np.ndarray, river: np.ndarray) -> np.ndarray:
    """Low ground near the river, connected to it."""
    dist = cv2.distanceTransform((~river).astype(np.uint8), cv2.DIST_L2, 3)
    cost = terrain + dist / (0.3 * size) + 0.35 * smooth_field(rng, size, 10 * f)
    candidates = cost < quantile_threshold(cost, rng.uniform(0.15, 0.45))
    count, comp = cv2.connectedComponents((candidates | river).astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(comp[river])] = True
    keep[0] = False
    return keep[comp] & ~river


def _roads(rng: np.random.Generator, size: int, f: float) -> np.ndarray:
    """Roads and, now and then, tarmac (an airfield apron or a big car park); bool."""
    road = np.zeros((size, size), np.uint8)
    if rng.random() < 0.6:
        for _ in range(rng.integers(1, 4)):
            pts = meander(rng, size, rng.uniform(0.0, 0.05) * size, n=12)
            draw_path(road, pts, np.full(len(pts), rng.uniform(1.0, 2.5) * f))
    if rng.random() < 0.12:
        c = rng.uniform(0.2, 0.8, 2) * size
        box = cv2.boxPoints(((c[0], c[1]), tuple(rng.uniform(0.08, 0.25, 2) * size), rng.uniform(0, 90)))
        cv2.fillPoly(road, [np.round(box).astype(np.int32)], 1)
    return road.astype(bool)
