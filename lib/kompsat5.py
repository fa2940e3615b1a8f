"""The KOMPSAT-5 water-segmentation layout: list files of 16-bit HH amplitude GeoTIFFs and 0/255 masks.

Layout (the published one; paths in the list files are relative to DATA_ROOT):

    DATA_ROOT/train_full/train.txt    one sample a line: image_path<TAB>mask_path
    DATA_ROOT/train_full/val.txt
    DATA_ROOT/train_full/img/WTR00533_K5_NIA0201.tif           uint16, 1 band: HH amplitude (digital numbers)
    DATA_ROOT/train_full/mask/WTR00533_K5_NIA0201_label.tif    integer, 1 band: 255 water, 0 land

List files may hold blank lines, whole-line `#` comments, surrounding whitespace and CRLF line ends.

Input: amplitude to dB, `20*log10(DN) + CALIBRATION_DB` (DN 0 is no-data), then the clip-and-scale
normalization of every band (`lib.bands.normalize(db, "HH")`, range BAND_RANGES["HH"]).
Target: mask 255 -> water (1), 0 -> land (0), any other value and DN-0 pixels -> no-data (IGNORE_INDEX,
also 255: mind that a MASK value of 255 means water, a TARGET value of 255 means no-data).

Training sees IMAGE_SIZE crops of the scenes: K5_TRAIN_CROP="random" (a random crop per access,
K5_CROPS_PER_SCENE accesses per scene per epoch) or "tiles" (every IMAGE_SIZE tile of every scene once per
epoch). Validation yields whole scenes, one item each.

`make_kompsat5_dataset` writes a synthetic dataset in this layout (make_kompsat5_demo.py).
"""
from __future__ import annotations

import random
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.bands import band_range, normalize
from lib.dataset import IGNORE_INDEX, PRELOAD_BUDGET_BYTES, DataError, label_to_target, preload_setting

BAND = "HH"
CALIBRATION_DB = 0.0         # dB added to 20*log10(DN); BAND_RANGES["HH"] applies to the sum
NODATA_DN = 0                # image DN that marks no-data (outside the swath)
MASK_WATER, MASK_LAND = 255, 0
TRAIN_CROPS = ("random", "tiles")
MAKE_DATA_HINT = ("make a synthetic dataset with `python make_kompsat5_demo.py` (writes data_k5/; then "
                  "DATA_ROOT=data_k5 TRAIN_LIST=train_full/train.txt VAL_LIST=train_full/val.txt)")

# synthetic data (make_kompsat5_dataset)
DEMO_DN_OFFSET_DB = 62.0     # 20*log10(DN) of a speckle-free pixel = sigma0 (dB) + this offset
DEMO_LOOKS = 3.0             # equivalent number of looks of the amplitude speckle
DEMO_CRS = "EPSG:32652"      # WGS 84 / UTM zone 52N (the Korean peninsula)
DEMO_PIXEL_M = 3.0           # KOMPSAT-5 standard mode: about 3 m
DEMO_TAG = "SYN01"           # file names: WTR{index:05d}_K5_{DEMO_TAG}.tif and ..._label.tif
DRY_FRACTION = 0.2           # scenes without water
NODATA_FRACTION = 0.3        # scenes with a zero-DN wedge at one border (swath edge)


# ------------------------------------------------------------------------------------ conversion

def amplitude_to_db(dn, calibration_db: float = CALIBRATION_DB) -> tuple[np.ndarray, np.ndarray]:
    """(20*log10(DN) + calibration_db as float32, no-data mask). No-data: DN 0 (and, for float input,
    DN <= 0 or non-finite); those pixels are NaN in the dB array."""
    dn = np.asarray(dn)
    values = dn.astype(np.float32)
    nodata = ~(values > NODATA_DN)  # also catches NaN
    if np.issubdtype(values.dtype, np.floating):
        nodata |= ~np.isfinite(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.log10(values, dtype=np.float32) * np.float32(20.0) + np.float32(calibration_db)
    db[nodata] = np.nan
    return db, nodata


def hh_image(dn, calibration_db: float = CALIBRATION_DB, ranges: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Network input from DN amplitudes: (image float32 in [0, 1], no-data mask); no-data pixels are 0."""
    db, _ = amplitude_to_db(dn, calibration_db)
    return normalize(db, BAND, ranges)  # NaN (no-data) pixels come back as invalid


def mask_to_target(mask) -> np.ndarray:
    """Mask 255 -> 1 (water), 0 -> 0 (land), anything else -> IGNORE_INDEX (no-data); uint8."""
    return label_to_target(mask, water=MASK_WATER, land=MASK_LAND)


def preprocess(dn, mask, calibration_db: float = CALIBRATION_DB, ranges: dict | None = None):
    """(image float32 [H, W] in [0, 1], target uint8 [H, W]) from a DN array and its 0/255 mask."""
    image, nodata = hh_image(dn, calibration_db, ranges)
    target = mask_to_target(mask)
    target[nodata] = IGNORE_INDEX
    return image, target


# ---------------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path
    where: str  # "list file, line N"


def read_list(root: Path | str, list_file: Path | str) -> list[Sample]:
    """The samples of a list file (`image_path<TAB>mask_path` per line, relative to root).
    A malformed line or a missing file is a DataError naming the list file, the line and the path."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"DATA_ROOT {str(root)!r} does not exist; {MAKE_DATA_HINT}")
    path = root / list_file
    if not path.is_file():
        raise DataError(f"list file {path} does not exist (TRAIN_LIST/VAL_LIST are relative to DATA_ROOT); "
                        f"{MAKE_DATA_HINT}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the list file ({type(error).__name__}: {error})") from None
    samples = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        fields = [field.strip() for field in line.split("\t") if field.strip()]
        if len(fields) != 2:
            found = "no tab" if "\t" not in line else f"{len(fields)} fields"
            raise DataError(f"{where}: expected image_path<TAB>mask_path, found {found}: {line!r}")
        image, mask = root / fields[0], root / fields[1]
        for kind, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise DataError(f"{where}: {kind} file {file} does not exist")
        samples.append(Sample(image, mask, where))
    if not samples:
        raise DataError(f"{path}: no samples (every line is blank or a comment)")
    return samples


def _open(path: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except Exception as error:  # RasterioIOError for garbage bytes, an unknown format, ...
            raise DataError(f"{path}: not a readable GeoTIFF ({type(error).__name__}: {error})") from None


def tiff_header(path: Path) -> tuple[int, int, int, str]:
    """(height, width, bands, dtype) of a GeoTIFF, read from its header only."""
    with _open(path) as src:
        if src.driver != "GTiff":
            raise DataError(f"{path}: not a GeoTIFF (GDAL reads it as {src.driver})")
        return src.height, src.width, src.count, src.dtypes[0]


def read_tiff(path: Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Band 1 of a GeoTIFF, or the (row, col, height, width) window of it."""
    from rasterio.windows import Window
    with _open(path) as src:
        try:
            if window is None:
                return src.read(1)
            row, col, height, width = window
            return src.read(1, window=Window(col, row, width, height))
        except Exception as error:  # truncated or corrupt data
            raise DataError(f"{path}: cannot decode the GeoTIFF ({type(error).__name__}: {error})") from None


def check_sample(sample: Sample) -> tuple[int, int]:
    """Check both files' headers; returns the scene's (height, width)."""
    height, width, count, dtype = tiff_header(sample.image)
    if count != 1:
        raise DataError(f"{sample.image}: expected 1 band (HH amplitude), found {count} ({sample.where})")
    if dtype != "uint16":
        raise DataError(f"{sample.image}: expected uint16 HH amplitude (digital numbers), found {dtype} "
                        f"({sample.where})")
    m_height, m_width, m_count, m_dtype = tiff_header(sample.mask)
    if m_count != 1:
        raise DataError(f"{sample.mask}: expected a 1-band mask, found {m_count} bands ({sample.where})")
    if not np.issubdtype(np.dtype(m_dtype), np.integer):
        raise DataError(f"{sample.mask}: expected an integer mask (0 land, 255 water), found {m_dtype} "
                        f"({sample.where})")
    if (m_height, m_width) != (height, width):
        raise DataError(f"{sample.mask}: mask is {m_height}x{m_width} but its image {sample.image} is "
                        f"{height}x{width} ({sample.where})")
    return height, width


# -------------------------------------------------------------------------------------- dataset

class Kompsat5Dataset(Dataset):
    """One split of the KOMPSAT-5 layout; items `(image float32 [1, H, W], target uint8 [1, H, W], 0)`.

    train=True: IMAGE_SIZE crops: crop="random" gives `crops_per_scene` items per scene, each a random
    crop drawn at access time; crop="tiles" gives every tile of a regular IMAGE_SIZE grid (a side that is
    not a multiple of IMAGE_SIZE gets one more tile flush with its far edge, overlapping its neighbour).
    train=False: one item per whole scene (all scenes must share one size, since the loader batches them).
    preload: True, False or "auto": decode every file once and keep the scenes in memory (float16
    image + uint8 target) when they fit; otherwise crops are read as windows from the files.
    """

    def __init__(self, root: Path | str, list_file: Path | str, train: bool, image_size: int = 256,
                 crop: str = "random", crops_per_scene: int = 16, transform: Callable | None = None,
                 preload: bool | str = "auto", calibration_db: float = CALIBRATION_DB,
                 ranges: dict | None = None, split: str | None = None):
        if crop not in TRAIN_CROPS:
            raise ValueError(f"crop must be one of {', '.join(TRAIN_CROPS)}, got {crop!r}")
        if int(crops_per_scene) < 1:
            raise ValueError(f"crops_per_scene must be at least 1, got {crops_per_scene}")
        self.root, self.list_file, self.train = Path(root), Path(list_file), train
        self.image_size, self.crop, self.crops_per_scene = int(image_size), crop, int(crops_per_scene)
        self.transform, self.calibration_db, self.ranges = transform, float(calibration_db), ranges
        self.split = split or ("train" if train else "val")
        self.skipped: Counter = Counter()  # stays empty: a listed sample is used or is an error
        band_range(BAND, ranges)  # fail early if the range table lacks HH
        preload = preload_setting(preload)  # "0", "false", ... from the command line
        self.samples = read_list(self.root, self.list_file)
        self.sizes = [check_sample(sample) for sample in self.samples]
        side = self.image_size
        if train:
            for sample, (height, width) in zip(self.samples, self.sizes):
                if height < side or width < side:
                    raise DataError(f"{sample.image}: scene is {height}x{width}, smaller than IMAGE_SIZE {side} "
                                    f"({sample.where})")
        else:
            for sample, size in zip(self.samples, self.sizes):
                if size != self.sizes[0]:
                    raise DataError(f"{sample.image}: scene is {size[0]}x{size[1]} but {self.samples[0].image} is "
                                    f"{self.sizes[0][0]}x{self.sizes[0][1]}; validation scenes must share one size "
                                    f"({sample.where})")
        self.tiles = [(scene, row, col) for scene, (height, width) in enumerate(self.sizes)
                      for row in tile_starts(height, side) for col in tile_starts(width, side)] \
            if train and crop == "tiles" else []
        if preload == "auto":
            preload = sum(h * w for h, w in self.sizes) * 3 < PRELOAD_BUDGET_BYTES
        self.cache = [self._decode(scene, half=True) for scene in range(len(self.samples))] if preload else None

    def _decode(self, scene: int, window: tuple[int, int, int, int] | None = None, half: bool = False):
        """(image, target) of a scene or a window of it; half=True stores the image as float16 (ample
        for [0, 1] data)."""
        sample = self.samples[scene]
        dn, mask = read_tiff(sample.image, window), read_tiff(sample.mask, window)
        image, target = preprocess(dn, mask, self.calibration_db, self.ranges)
        return (image.astype(np.float16) if half else image), target

    def report(self) -> str:
        h, w = self.sizes[0]
        if not self.train:
            return f"{self.split}: {len(self.samples)} whole scenes ({h}x{w}) from {self.list_file}"
        side = self.image_size
        how = (f"random {side}x{side} crops, {self.crops_per_scene} per scene" if self.crop == "random"
               else f"{side}x{side} tiles")
        return f"{self.split}: {len(self.samples)} scenes from {self.list_file}, {how} = {len(self)} items per epoch"

    def __len__(self) -> int:
        if not self.train:
            return len(self.samples)
        return len(self.samples) * self.crops_per_scene if self.crop == "random" else len(self.tiles)

    def locate(self, item: int) -> tuple[int, tuple[int, int, int, int] | None]:
        """(scene, window (row, col, height, width) or None for the whole scene) of an item."""
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} items")
        if not self.train:
            return item, None
        side = self.image_size
        if self.crop == "tiles":
            scene, row, col = self.tiles[item]
        else:
            scene = item // self.crops_per_scene
            height, width = self.sizes[scene]
            row, col = random.randrange(height - side + 1), random.randrange(width - side + 1)
        return scene, (row, col, side, side)

    def __getitem__(self, item: int):
        scene, window = self.locate(item)
        if self.cache is not None:
            image, target = self.cache[scene]
            if window is not None:
                row, col, height, width = window
                image, target = image[row:row + height, col:col + width], target[row:row + height, col:col + width]
            image, target = image.astype(np.float32), target.copy()  # never hand out views of the cache
        else:
            image, target = self._decode(scene, window)
        if self.transform is not None:
            out = self.transform(image=image, mask=target)
            image, target = out["image"], out["mask"]
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(target, dtype=np.uint8))[None],
                torch.tensor(0, dtype=torch.long))


def tile_starts(length: int, side: int) -> list[int]:
    """Starts of a regular grid of `side` tiles over `length`, plus one flush with the end if needed."""
    starts = list(range(0, length - side + 1, side))
    if starts and starts[-1] + side < length:
        starts.append(length - side)
    return starts


# ------------------------------------------------------------------------------ engine interface

def kompsat5_settings(c: dict) -> dict:
    """Data settings a checkpoint records so evaluation and prediction repeat the conversion."""
    return {"amplitude_to_db": "20*log10(DN) + CALIBRATION_DB", "calibration_db": float(c.get("CALIBRATION_DB", 0.0)),
            "nodata_dn": NODATA_DN, "image_dtype": "uint16",
            "mask_values": {"water": MASK_WATER, "land": MASK_LAND, "other": "no-data"}}


def build_kompsat5_datasets(c: dict):
    """(train, val) datasets of the KOMPSAT-5 layout for the constants `c`."""
    from lib.augmentation import train_augmentation  # imports lib.dataset, as this module does

    crop = c.get("K5_TRAIN_CROP", "random")
    if crop not in TRAIN_CROPS:
        raise SystemExit(f"error: K5_TRAIN_CROP={crop!r}; expected one of {', '.join(TRAIN_CROPS)}")
    crops = c.get("K5_CROPS_PER_SCENE", 16)
    if not isinstance(crops, int) or crops < 1:
        raise SystemExit(f"error: K5_CROPS_PER_SCENE={crops!r}; expected a positive integer")
    common = dict(image_size=c["IMAGE_SIZE"], preload=c["PRELOAD"], calibration_db=float(c.get("CALIBRATION_DB", 0.0)))
    transform = train_augmentation(c["SEED"]) if c["AUGMENT"] else None
    train_set = Kompsat5Dataset(c["DATA_ROOT"], c["TRAIN_LIST"], train=True, crop=crop, crops_per_scene=crops,
                                transform=transform, split="train", **common)
    val_set = Kompsat5Dataset(c["DATA_ROOT"], c["VAL_LIST"], train=False, split="val", **common)
    return train_set, val_set


# ----------------------------------------------------------------------------------- synthetic data

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
    from lib.synthetic.demo import generate_patch
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
