"""Band-agnostic patch datasets: `DATA_ROOT/{split}/img/{patch_id}_{band}.npy` + `{split}/lab/{patch_id}.npy`.

Training draws one band at random on every access, so the model sees each patch in every band over
the epochs. Validation walks every (patch, band) pair in a fixed order, so each metric exists per band.

Every item is `(image, target, band_index)`: image float32 [1, H, W] in [0, 1], target uint8
[1, H, W] with 1 water, 0 not water and IGNORE_INDEX (255) for no-data, band_index int64.

With `stack` (INPUT_BANDS, e.g. ("VV", "VH")) every item is instead the patch's stacked bands, image
[len(stack), H, W], no-data where any of them is; validation still walks (patch, band) pairs, each giving the
same stacked image, so the per-band metrics and threshold baselines keep their columns.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.bands import normalize
from lib.data.labels import IGNORE_INDEX, label_to_target
from lib.config import check_value
from lib.errors import DataError

PRELOAD_BUDGET_BYTES = 4 * 1024**3  # PRELOAD="auto" keeps the split in memory below this size (as float16)
FLOAT32_CACHE_BYTES = 1024**3       # below this a preloaded split stays float32: no conversion per sample




def missing_data_message(root: Path | str) -> str:
    return (f"DATA_ROOT {str(root)!r} does not exist. Make the demo data with `python make_demo_data.py` "
            f"(writes 02_kfold/), or point DATA_ROOT at your own data laid out as "
            f"DATA_ROOT/{{train,val}}/img/{{patch_id}}_{{band}}.npy and DATA_ROOT/{{train,val}}/lab/{{patch_id}}.npy")


def check_array(array: np.ndarray, path: Path, image_size: int | None) -> None:
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (H, W), got shape {tuple(array.shape)}")
    if image_size is not None and array.shape != (image_size, image_size):
        raise DataError(f"{path}: expected shape ({image_size}, {image_size}) (IMAGE_SIZE={image_size}), "
                        f"got {tuple(array.shape)}")
    if array.dtype.kind not in "biuf":  # complex, datetime, strings, records would convert wrongly or not at all
        hint = " (complex SAR data: convert to backscatter in dB first)" if array.dtype.kind == "c" else ""
        raise DataError(f"{path}: expected a real numeric array (bool, integer, float), got dtype {array.dtype}{hint}")


NPY_MAGIC = b"\x93NUMPY"


def file_kind(head: bytes) -> str:
    """What a file that does not start with the .npy magic bytes seems to be, from its first bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, e.g. an .npz from np.savez; save each array with np.save"
    if head.startswith(b"\x80"):
        return "a Python pickle; refused, since unpickling can run code"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF image"
    return f"it does not start with the .npy magic bytes; first bytes {head!r}"


def read_npy(path: Path, image_size: int | None = None, header_only: bool = False) -> np.ndarray:
    """Load a .npy array, turning every failure into a DataError that names the file."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty (0 bytes)")
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
        if head != NPY_MAGIC:  # np.load would call any such file "pickled data" (or open a zip as NpzFile)
            raise DataError(f"{path}: not a .npy file ({file_kind(head)})")
        array = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise DataError(f"{path}: not found (deleted, or a broken symlink)") from None
    except Exception as error:  # corrupt header, truncated data, object array, a folder, ...
        if isinstance(error, ValueError) and any(s in str(error).lower() for s in ("object arrays", "python objects")):
            raise DataError(f"{path}: refused: an object array (pickled Python objects, which can run code "
                            f"when loaded); save a numeric array") from None
        raise DataError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
    check_array(array, path, image_size)
    return array


@dataclass
class SplitIndex:
    """The patches of one split that have a label and every required band, plus what was skipped."""
    split: str
    patches: list[tuple[str, dict[str, Path], Path]]
    skipped: Counter = field(default_factory=Counter)

    def report(self) -> str:
        line = f"{self.split}: {len(self.patches)} patches"
        if self.skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        return line


def index_split(root: Path | str, split: str, bands: Sequence[str], image_size: int | None = 256) -> SplitIndex:
    """Find the patches of `root/split`, check every file's header, count what has to be skipped."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"DATA_ROOT {str(root)!r} is a file, not a folder of {{train,val}}/img and {{train,val}}/lab")
    if not root.is_dir():
        raise DataError(missing_data_message(root))
    img_dir, lab_dir = root / split / "img", root / split / "lab"
    for folder in (img_dir, lab_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder missing (expected {split}/img and {split}/lab under {root})")

    band_files: dict[str, dict[str, Path]] = {}
    for path in sorted(img_dir.glob("*.npy")):
        patch_id, sep, band = path.stem.rpartition("_")
        if sep and band in bands:
            band_files.setdefault(patch_id, {})[band] = path
    labels = {path.stem: path for path in sorted(lab_dir.glob("*.npy"))}
    if not labels and not band_files:
        raise DataError(f"{root / split}: no .npy files found in img/ and lab/")

    index = SplitIndex(split, [])
    for patch_id, label_path in labels.items():
        found = band_files.get(patch_id, {})
        missing = [band for band in bands if band not in found]
        if len(missing) == len(bands):
            index.skipped["label without band files"] += 1
            continue
        if missing:
            for band in missing:
                index.skipped[f"missing band {band}"] += 1
            continue
        read_npy(label_path, image_size, header_only=True)
        for band in bands:
            read_npy(found[band], image_size, header_only=True)
        index.patches.append((patch_id, {band: found[band] for band in bands}, label_path))
    orphans = len(set(band_files) - set(labels))
    if orphans:
        index.skipped["band files without label"] += orphans
    if not index.patches:
        raise DataError(f"{root / split}: no usable patches with bands {list(bands)} ({index.report()})")
    return index


def check_label_values(index: SplitIndex, folder: Path) -> None:
    """Refuse a split whose labels cannot be what they seem: no valid pixel (0 or 1) at all, or no water (1)
    anywhere while 255 lies on valid image pixels, the signature of masks saved as 0/255 (255 is no-data here,
    so such a split would train and score with no water: IoU 1.000 of nothing). A dry split whose 255 pixels
    are where the image has no data too (a real chip without water, e.g. STAC Overflow's) is what it seems."""
    counts = Counter()
    for _, band_paths, label_path in index.patches:
        raw = np.asarray(read_npy(label_path, header_only=True))
        counts["1"] += int(np.count_nonzero(raw == 1))
        counts["0"] += int(np.count_nonzero(raw == 0))
        counts["255"] += int(np.count_nonzero(raw == 255))
        counts["all"] += raw.size
        if (raw == 255).any():  # 255 under image data: a mask's water; under no data: the no-data it says
            image = np.asarray(read_npy(next(iter(band_paths.values())), header_only=True))
            counts["255 on data"] += int(np.count_nonzero((raw == 255) & np.isfinite(image)))
    found = f"0: {counts['0']:,} px, 1: {counts['1']:,} px, 255: {counts['255']:,} px, other: " \
            f"{counts['all'] - counts['0'] - counts['1'] - counts['255']:,} px"
    meaning = "labels are 1 water, 0 not water, anything else no-data"
    if counts["0"] + counts["1"] == 0:
        raise DataError(f"{folder}: no label pixel is 0 or 1 ({found}): nothing to train or score; {meaning}")
    if counts["1"] == 0 and counts["255 on data"] > counts["255"] // 2:
        raise DataError(f"{folder}: no label pixel is 1 (water) but {counts['255']:,} are 255 ({found}): these look "
                        f"like masks saved as 0/255, whose 255 would be read as no-data; {meaning}: convert them "
                        f"(255 -> 1, e.g. np.save(path, (mask == 255).astype(np.uint8)))")


def preload_setting(value: bool | str) -> bool | str:
    """PRELOAD as True, False or "auto", typed by lib.config (a command-line "0", "false", ... included)."""
    return check_value("PRELOAD", value)


class BandPatchDataset(Dataset):
    """One split of the band-agnostic layout.

    train=True: len = number of patches; each access picks a band from `bands` at random.
    train=False: len = patches x bands, deterministic order (patch-major).
    preload: True, False or "auto" (keep the normalized split in memory when it fits: as float32 below
    FLOAT32_CACHE_BYTES, which spares the data pipeline a conversion per sample, else as float16).
    """

    def __init__(self, root: Path | str, split: str, bands: Sequence[str], train: bool,
                 transform: Callable | None = None, ranges: dict | None = None,
                 image_size: int | None = 256, preload: bool | str = "auto", stack: Sequence[str] | None = None):
        self.root, self.split, self.bands, self.train = Path(root), split, tuple(bands), train
        self.transform, self.ranges, self.image_size = transform, ranges, image_size
        self.stack = tuple(stack) if stack else None
        self.read_bands = tuple(dict.fromkeys([*self.bands, *(self.stack or ())]))  # self.bands first: same indices
        preload = preload_setting(preload)
        self.index = index_split(self.root, split, self.read_bands, image_size)
        check_label_values(self.index, self.root / split / "lab")
        self.patches, self.skipped = self.index.patches, self.index.skipped
        if preload == "auto":
            side = image_size or 256
            preload = len(self.patches) * (len(self.read_bands) * 2 + 1) * side * side < PRELOAD_BUDGET_BYTES
        self.cache = self._preload() if preload else None

    def _load_target(self, patch: int) -> np.ndarray:
        return label_to_target(read_npy(self.patches[patch][2], self.image_size))

    def _load_band(self, patch: int, band: str, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalized band and its target; NaN/inf pixels of this band become no-data."""
        raw = read_npy(self.patches[patch][1][band], self.image_size)
        image, invalid = normalize(raw, band, self.ranges)
        if invalid.any():
            target = target.copy()
            target[invalid] = IGNORE_INDEX
        return image, target

    def _preload(self) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """Decode every file once; images as float32, or as float16 (ample for [0, 1] data) when float32
        would take more than FLOAT32_CACHE_BYTES. Bands without NaN/inf pixels share one target array."""
        side = self.image_size or 256
        dtype = np.float32 if len(self.patches) * len(self.read_bands) * side * side * 4 <= FLOAT32_CACHE_BYTES else np.float16
        cache = []
        for patch in range(len(self.patches)):
            label = self._load_target(patch)
            pairs = [self._load_band(patch, band, label) for band in self.read_bands]
            cache.append(([image.astype(dtype, copy=False) for image, _ in pairs], [target for _, target in pairs]))
        return cache

    def report(self) -> str:
        return self.index.report()

    def __len__(self) -> int:
        return len(self.patches) if self.train else len(self.patches) * len(self.bands)

    def locate(self, item: int) -> tuple[int, int]:
        """(patch, band index) of an item; training draws the band at random."""
        if self.train:
            return item, 0 if self.stack else random.randrange(len(self.bands))
        return item // len(self.bands), item % len(self.bands)

    def _band(self, patch: int, read_index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            images, targets = self.cache[patch]
            return images[read_index].astype(np.float32, copy=False), targets[read_index]
        return self._load_band(patch, self.read_bands[read_index], self._load_target(patch))

    def _stacked(self, patch: int) -> tuple[np.ndarray, np.ndarray]:
        """[H, W, C] image of the stacked bands (albumentations' layout) and the target, no-data where any band is."""
        pairs = [self._band(patch, self.read_bands.index(band)) for band in self.stack]
        target = pairs[0][1]
        for _, other in pairs[1:]:
            target = np.where(other == IGNORE_INDEX, other, target)
        return np.stack([image for image, _ in pairs], axis=-1), target

    def __getitem__(self, item: int):
        patch, band_index = self.locate(item)
        image, target = self._stacked(patch) if self.stack else self._band(patch, band_index)
        if self.transform is not None:
            out = self.transform(image=image, mask=target)
            image, target = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return (image.permute(2, 0, 1) if self.stack else image[None],
                torch.from_numpy(np.ascontiguousarray(target))[None],
                torch.tensor(band_index, dtype=torch.long))
