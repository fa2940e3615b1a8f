"""Training augmentation (albumentations) and per-worker reseeding.

Geometry moves image and mask together; pixels that Affine pads in become no-data in the mask
(IGNORE_INDEX), not dry land. RandomBrightnessContrast clips to [0, 1], so it runs on normalized input.
"""
from __future__ import annotations

import albumentations as A
import cv2
import torch

from lib.dataset import IGNORE_INDEX


def train_augmentation(seed: int | None = None) -> A.Compose:
    """Flips, RandomRotate90, Affine and RandomBrightnessContrast, in the order that runs fastest.

    Affine and RandomBrightnessContrast come first, on the contiguous array: after a flip or rotation the
    array is a strided view, on which both run about 2x slower. The distribution is the same as with
    the flips first: the Affine ranges are symmetric under flips and 90-degree turns, and brightness and
    contrast act per pixel (padding included, as before)."""
    return A.Compose([
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
    ], seed=seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: every worker (and every epoch, without persistent workers) gets its
    own augmentation stream; otherwise all workers would replay the same augmentations."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)
