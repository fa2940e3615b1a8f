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

The parts: lib/synthetic/fields.py (random fields, drawing), landscape.py (the scene's geometry),
sentinel1.py and sentinel2.py (the sensors), this module (a patch, the dataset on disk) and figure.py.

Everything is deterministic per seed: patch i is drawn from its own generator seeded with
(seed, i), and the dataset-level choices (which patches are dry, which have no-data) from one
seeded with (seed,).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lib.synthetic.landscape import draw_landscape
from lib.synthetic.sentinel1 import LOOKS, render_sar
from lib.synthetic.sentinel2 import CLOUD_PROBABILITY, render_optical

TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")
VAL_BANDS = ("VV", "VH")
PATCH_PREFIX = "demo_"
DRY_FRACTION = 0.2     # patches without any water
NODATA_FRACTION = 0.1  # patches with a no-data strip (label 255) at one border
NODATA = 255


def generate_patch(rng: np.random.Generator, size: int = 256, *, dry: bool = False, nodata: bool = False,
                   cloudy: bool | None = None, looks: float = LOOKS):
    """One synthetic patch.

    Returns (bands, label, info): bands maps VV, VH, B2, B3, B4, NDVI, NDWI to float32 (size, size)
    arrays; label is uint8 (1 water, 0 not water, 255 no-data); info holds boolean masks of the
    scene parts (water, calm_water, windy_water, flooded_vegetation, road, shadow, cloud) and the
    speckle-free mean backscatter (vv_mean_db, vh_mean_db).
    """
    if cloudy is None:
        cloudy = rng.random() < CLOUD_PROBABILITY
    scene = draw_landscape(rng, size, dry)
    sar = render_sar(rng, scene, looks)
    optical, cloud = render_optical(rng, scene, sar, cloudy)
    label = _label(rng, scene.water, nodata, scene.f)

    bands = {"VV": sar.vv_db, "VH": sar.vh_db, **optical}
    bands = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in bands.items()}
    water, flooded_veg = scene.water, sar.flooded_vegetation
    info = {"water": water, "calm_water": water & (sar.windy == 0) & ~flooded_veg, "windy_water": sar.windy > 0,
            "flooded_vegetation": flooded_veg, "road": scene.road, "shadow": sar.shadow, "cloud": cloud,
            "land_cover": scene.land_cover, "vv_mean_db": sar.vv_mean_db, "vh_mean_db": sar.vh_mean_db}
    return bands, label, info


def _label(rng: np.random.Generator, water: np.ndarray, nodata: bool, f: float) -> np.ndarray:
    """1 water, 0 not water; with `nodata` a strip of NODATA along one random border."""
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
    return label


# ----------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------

def patch_id(index: int) -> str:
    return f"{PATCH_PREFIX}{index:05d}"


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


def make_demo_dataset(root, n_train: int = 60, n_val: int = 20, folds: int = 0, seed: int = 42,
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

    dry, nodata = _draw_plan(seed, total)
    targets, splits = _layout(root, n_train, total, folds)
    stats = _PoolStats()
    for i in range(total):
        rng = np.random.default_rng([seed, i])
        bands, label, info = generate_patch(rng, size, dry=bool(dry[i]), nodata=bool(nodata[i]))
        for img, lab, names in targets[i]:
            _write(img, lab, patch_id(i), bands, label, names)
        stats.add(bands["VV"], label, info)
    return {"root": str(root), "n_patches": total, "n_train": n_train, "n_val": n_val, "folds": folds,
            "size": size, "seed": seed, **stats.summary(nodata_patches=int(nodata.sum())),
            "splits": splits, "removed": removed, "seconds": time.perf_counter() - start}


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


def _draw_plan(seed: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Which patches are dry and which have a no-data strip (one generator seeded with (seed,))."""
    plan = np.random.default_rng([seed])
    dry = np.zeros(total, bool)
    n_dry = int(round(DRY_FRACTION * total))
    if total >= 3:
        n_dry = max(1, n_dry)
    dry[plan.permutation(total)[:n_dry]] = True
    nodata = np.zeros(total, bool)
    nodata[plan.permutation(total)[:max(1, int(round(NODATA_FRACTION * total)))]] = True
    return dry, nodata


def _layout(root: Path, n_train: int, total: int, folds: int) -> tuple[list[list[tuple[Path, Path, tuple]]], dict]:
    """Where each patch goes: per patch a list of (img_dir, lab_dir, band_names); and patches per split."""
    targets: list[list[tuple[Path, Path, tuple]]] = [[] for _ in range(total)]
    splits: dict[str, int] = {}
    if folds == 0:
        layout = {"train": range(0, n_train), "val": range(n_train, total)}
    else:
        layout = {}
        for k, chunk in enumerate(np.array_split(np.arange(total), folds), start=1):
            in_val = np.zeros(total, bool)
            in_val[chunk] = True
            layout.update({f"fold_{k}/train": np.flatnonzero(~in_val), f"fold_{k}/val": chunk})
    for split, members in layout.items():
        img, lab = _prepare_split(root / split)
        splits[split] = len(members)
        for i in members:
            targets[i].append((img, lab, TRAIN_BANDS if split.endswith("train") else VAL_BANDS))
    return targets, splits


class _PoolStats:
    """Water fraction, dry and cloudy patches, and the best single global VV threshold over the pool."""

    def __init__(self):
        self.edges = np.arange(-40.0, 15.01, 0.25)
        self.hist_water = np.zeros(len(self.edges) - 1)
        self.hist_land = np.zeros(len(self.edges) - 1)
        self.water_pixels = self.valid_pixels = self.dry_patches = self.cloudy_patches = 0

    def add(self, vv: np.ndarray, label: np.ndarray, info: dict) -> None:
        n_water = int((label == 1).sum())
        self.water_pixels += n_water
        self.valid_pixels += int((label != NODATA).sum())
        self.dry_patches += n_water == 0
        self.cloudy_patches += bool(info["cloud"].any())
        vv = np.clip(vv, self.edges[0], self.edges[-1] - 1e-3)
        self.hist_water += np.histogram(vv[label == 1], self.edges)[0]
        self.hist_land += np.histogram(vv[label == 0], self.edges)[0]

    def summary(self, nodata_patches: int) -> dict:
        tp = np.cumsum(self.hist_water)  # water pixels below each upper edge
        fp = np.cumsum(self.hist_land)
        iou = tp / np.maximum(self.hist_water.sum() + fp, 1)
        return {"water_fraction": self.water_pixels / max(self.valid_pixels, 1), "dry_patches": self.dry_patches,
                "nodata_patches": nodata_patches, "cloudy_patches": self.cloudy_patches, "vv_threshold_iou": float(iou.max()),
                "vv_threshold_db": float(self.edges[1:][iou.argmax()])}
