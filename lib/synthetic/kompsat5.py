"""Synthetic KOMPSAT-5 scenes in the published layout (make_kompsat5_demo.py): uint16 HH amplitude GeoTIFFs
with speckle and 0/255 water masks, list files relative to the root; lib/data/kompsat5/ reads them like real data."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lib.data.kompsat5.io import MASK_LAND, MASK_WATER, NODATA_DN, amplitude_to_db
from lib.synthetic.demo import generate_patch

DEMO_DN_OFFSET_DB = 62.0     # 20*log10(DN) of a speckle-free pixel = sigma0 (dB) + this offset
DEMO_LOOKS = 3.0             # equivalent number of looks of the amplitude speckle
DEMO_CRS = "EPSG:32652"      # WGS 84 / UTM zone 52N (the Korean peninsula)
DEMO_PIXEL_M = 3.0           # KOMPSAT-5 standard mode: about 3 m
DEMO_TAG = "SYN01"           # file names: WTR{index:05d}_K5_{DEMO_TAG}.tif and ..._label.tif
DRY_FRACTION = 0.2           # scenes without water
NODATA_FRACTION = 0.3        # scenes with a zero-DN wedge at one border (swath edge)


def scene_name(index: int) -> str:
    return f"WTR{index:05d}_K5_{DEMO_TAG}"


def _nodata_wedge(rng: np.random.Generator, size: int) -> np.ndarray:
    """A zero-DN wedge along one border, as at the edge of a geocoded swath (3-15% of the width)."""
    depth = rng.uniform(0.03, 0.15) * size
    slope = np.tan(np.radians(rng.uniform(-12.0, 12.0)))
    along = np.arange(size, dtype=np.float32)[:, None] + np.zeros((1, size), np.float32)
    across = np.arange(size, dtype=np.float32)[None, :] + np.zeros((size, 1), np.float32)
    side = rng.integers(4)
    if side in (2, 3):  # wedge along the top or bottom instead of left or right
        along, across = across, along
    if side in (1, 3):
        across = size - 1 - across
    return across < depth + slope * (along - size / 2)


def synthetic_scene(rng: np.random.Generator, size: int, dry: bool = False, nodata: bool = False):
    """(dn uint16 [size, size], mask uint16 0/255) of one synthetic KOMPSAT-5 HH scene.

    The geometry and the speckle-free backscatter come from lib.synthetic.demo.generate_patch (rivers, lakes,
    floods, land cover, roads, radar shadow, wind-roughened water, flooded vegetation); HH differs from
    VV by -2 dB over calm water and +3 dB (double bounce) over flooded vegetation. Mean amplitude in dB is
    sigma0 + DEMO_DN_OFFSET_DB + a per-scene gain, then amplitude speckle (square root of Gamma intensity,
    DEMO_LOOKS looks): calm water comes out at DN tens to a few hundred, fields and forest at hundreds to
    a thousand, towns at thousands."""
    _, _, info = generate_patch(rng, size, dry=dry, nodata=False, cloudy=False)
    water = info["water"]
    mean_db = info["vv_mean_db"] + DEMO_DN_OFFSET_DB + rng.normal(0.0, 1.5)
    mean_db = mean_db - 2.0 * info["calm_water"] + 3.0 * info["flooded_vegetation"]
    intensity = np.power(10.0, mean_db / 10.0) * rng.gamma(DEMO_LOOKS, 1.0 / DEMO_LOOKS, size=(size, size))
    dn = np.clip(np.rint(np.sqrt(intensity)), 1, np.iinfo(np.uint16).max).astype(np.uint16)
    mask = np.where(water, MASK_WATER, MASK_LAND).astype(np.uint16)
    if nodata:
        dn[_nodata_wedge(rng, size)] = NODATA_DN  # the mask keeps its 0/255 there, as labels do
    return dn, mask


def _write_tiff(path: Path, array: np.ndarray, transform, nodata=None) -> None:
    import rasterio
    size = array.shape[0]
    profile = dict(driver="GTiff", width=array.shape[1], height=size, count=1, dtype=array.dtype.name,
                   crs=DEMO_CRS, transform=transform, compress="deflate")
    if size >= 256 and size % 256 == 0 and array.shape[1] % 256 == 0:
        profile.update(tiled=True, blockxsize=256, blockysize=256)  # cheap windowed reads of crops
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def make_kompsat5_dataset(root, n_train: int = 8, n_val: int = 2, size: int = 1024, seed: int = 0) -> dict:
    """Write a synthetic dataset in the KOMPSAT-5 layout under `root`:
    root/train_full/{img,mask}/*.tif and root/train_full/{train,val}.txt (paths relative to root).

    Deterministic per seed (scene i draws from its own generator seeded with (seed, i)). Returns a
    summary: counts, water fraction, dry and no-data scenes, percentiles of 20*log10(DN) over water and
    land pixels, the best single dB threshold and its IoU, and the seconds taken."""
    from affine import Affine

    start = time.perf_counter()
    n_train, n_val, size = int(n_train), int(n_val), int(size)
    total = n_train + n_val
    if n_train < 0 or n_val < 0 or total < 1:
        raise ValueError(f"need at least one scene, got n_train={n_train}, n_val={n_val}")
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    root = Path(root)
    folder = root / "train_full"
    img_dir, mask_dir = folder / "img", folder / "mask"
    for directory in (img_dir, mask_dir):
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"WTR*_K5_{DEMO_TAG}*.tif"):  # only files an earlier run wrote
            stale.unlink()

    plan = np.random.default_rng([seed])
    dry = np.zeros(total, bool)
    dry[plan.permutation(total)[:max(1 if total >= 3 else 0, int(round(DRY_FRACTION * total)))]] = True
    nodata = np.zeros(total, bool)
    nodata[plan.permutation(total)[:max(1 if total >= 2 else 0, int(round(NODATA_FRACTION * total)))]] = True

    edges = np.arange(0.0, 96.5, 0.25)
    hist = {"water": np.zeros(len(edges) - 1), "land": np.zeros(len(edges) - 1)}
    lines = {"train": [], "val": []}
    water_pixels = valid_pixels = 0
    for i in range(total):
        rng = np.random.default_rng([seed, i])
        dn, mask = synthetic_scene(rng, size, dry=bool(dry[i]), nodata=bool(nodata[i]))
        name = scene_name(i)
        x0, y0 = rng.uniform(300_000, 480_000), rng.uniform(3_900_000, 4_200_000)
        transform = Affine(DEMO_PIXEL_M, 0.0, round(x0, -1), 0.0, -DEMO_PIXEL_M, round(y0, -1))  # north-up
        _write_tiff(img_dir / f"{name}.tif", dn, transform, nodata=NODATA_DN)
        _write_tiff(mask_dir / f"{name}_label.tif", mask, transform)
        split = "train" if i < n_train else "val"
        lines[split].append(f"train_full/img/{name}.tif\ttrain_full/mask/{name}_label.tif")
        db, invalid = amplitude_to_db(dn)
        for kind, value in (("water", MASK_WATER), ("land", MASK_LAND)):
            pixels = (mask == value) & ~invalid
            hist[kind] += np.histogram(np.clip(db[pixels], edges[0], edges[-1] - 1e-3), edges)[0]
        water_pixels += int(((mask == MASK_WATER) & ~invalid).sum())
        valid_pixels += int((~invalid).sum())
    for split, entries in lines.items():
        (folder / f"{split}.txt").write_text("".join(f"{line}\n" for line in entries))

    def percentiles(counts: np.ndarray) -> dict[str, float]:
        cumulative = np.cumsum(counts) / max(counts.sum(), 1)
        return {f"p{q:g}": float(edges[1:][min(np.searchsorted(cumulative, q / 100), len(counts) - 1)])
                for q in (0.5, 1, 5, 50, 95, 99, 99.5)} if counts.sum() else {}

    tp = np.cumsum(hist["water"])  # water pixels below each upper edge
    iou = tp / np.maximum(hist["water"].sum() + np.cumsum(hist["land"]), 1)
    return {"root": str(root), "n_scenes": total, "n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
            "water_fraction": water_pixels / max(valid_pixels, 1), "dry_scenes": int(dry.sum()),
            "nodata_scenes": int(nodata.sum()), "db_water": percentiles(hist["water"]),
            "db_land": percentiles(hist["land"]), "threshold_db": float(edges[1:][iou.argmax()]),
            "threshold_iou": float(iou.max()), "lists": [str(folder / "train.txt"), str(folder / "val.txt")],
            "seconds": time.perf_counter() - start}
