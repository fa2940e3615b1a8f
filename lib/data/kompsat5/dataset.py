"""The KOMPSAT-5 dataset: IMAGE_SIZE crops or tiles of the listed scenes for training, whole scenes for
validation; it reads and checks the files through lib.data.kompsat5.io."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.bands import band_range
from lib.constants_table import K5_TRAIN_CROPS
from lib.data.dataset import PRELOAD_BUDGET_BYTES, preload_setting
from lib.errors import DataError
from lib.data.kompsat5.io import BAND, CALIBRATION_DB, check_sample, preprocess, read_list, read_tiff

TRAIN_CROPS = K5_TRAIN_CROPS  # the name lib.data.kompsat5 exports


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
