"""Training augmentation (albumentations) and per-worker reseeding.

Geometry moves image and mask together; pixels that Affine pads in become no-data in the mask
(IGNORE_INDEX), not dry land. RandomBrightnessContrast clips to [0, 1], so it runs on normalized input.
SarJitter (photometric="sar") is the SAR-shaped alternative measured in docs/real-sar.md.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from lib.data.labels import IGNORE_INDEX


class Affine(A.Affine):
    """albumentations' Affine (same parameters, same output) warping from a fresh copy of its input: the
    preloaded split is far larger than the CPU caches, and warpAffine's rotated reads of a cold array
    run about 2x slower than one sequential copy followed by the warp (15-30% of the data pipeline here)."""

    def apply(self, img: np.ndarray, *args, **params) -> np.ndarray:
        return super().apply(img.copy(), *args, **params)

    def apply_to_mask(self, mask: np.ndarray, *args, **params) -> np.ndarray:
        return super().apply_to_mask(mask.copy(), *args, **params)


ROTATIONS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


class RandomRotate90(A.RandomRotate90):
    """albumentations' RandomRotate90 (same parameters, same output) rotating with cv2.rotate: np.rot90
    returns a strided view that every later step has to copy, 5x slower on a 256 px patch."""

    def apply(self, img: np.ndarray, factor: int, **params) -> np.ndarray:
        if factor == 0 or img.ndim > 3:
            return super().apply(img, factor, **params)
        return cv2.rotate(np.ascontiguousarray(img), ROTATIONS[factor])


class RandomBrightnessContrast(A.RandomBrightnessContrast):
    """albumentations' RandomBrightnessContrast (same parameters) computed in float32 for float32 images:
    albucore goes through float64 copies, 4x slower here. Values differ by float rounding (< 1e-6)."""

    def apply(self, img: np.ndarray, alpha: float, beta: float, **params) -> np.ndarray:
        if img.dtype != np.float32:
            return super().apply(img, alpha, beta, **params)
        out = np.multiply(img, np.float32(alpha))
        out += np.float32(beta)
        return np.clip(out, 0.0, 1.0, out=out)  # float images live in [0, 1], as albumentations clips them


class SarJitter(A.ImageOnlyTransform):
    """SAR-shaped photometric jitter on a normalized band, in dB (`db_per_unit` dB per normalized unit;
    35 for the default VV range): a calibration offset per sample (uniform +-offset_db), an incidence-angle
    gradient across the patch (a linear ramp of up to +-gradient_db from edge to edge, along x or y), and
    speckle re-sampled on top of the image's own (multiplicative Gamma noise of `looks` looks, in dB).
    Clipped to [0, 1] as the normalization does."""

    def __init__(self, offset_db: float = 2.0, gradient_db: float = 1.5, looks: float = 8.0,
                 db_per_unit: float = 35.0, p: float = 0.5):
        super().__init__(p=p)
        self.offset_db, self.gradient_db, self.looks, self.db_per_unit = offset_db, gradient_db, looks, db_per_unit

    def get_params_dependent_on_data(self, params, data):
        shape = params["shape"][:2]
        rng = self.random_generator
        speckle = 10.0 * np.log10(rng.gamma(self.looks, 1.0 / self.looks, size=shape).astype(np.float32))
        ramp = np.linspace(-0.5, 0.5, shape[1], dtype=np.float32)[None, :] if rng.random() < 0.5 else \
            np.linspace(-0.5, 0.5, shape[0], dtype=np.float32)[:, None]
        db = rng.uniform(-self.offset_db, self.offset_db) + rng.uniform(-self.gradient_db, self.gradient_db) * ramp + speckle
        return {"shift": (db / np.float32(self.db_per_unit)).astype(np.float32)}

    def apply(self, img: np.ndarray, shift: np.ndarray, **params) -> np.ndarray:
        return np.clip(img + shift.reshape(shift.shape + (1,) * (img.ndim - 2)), 0.0, 1.0).astype(img.dtype, copy=False)


PHOTOMETRIC = ("brightness", "sar")


def train_augmentation(seed: int | None = None, photometric: str = "brightness", sar_offset_db: float = 0.0) -> A.Compose:
    """Flips, RandomRotate90, Affine and RandomBrightnessContrast, in the order that runs fastest.
    `sar_offset_db` > 0 (SAR_OFFSET_DB) replaces RandomBrightnessContrast by SarJitter with a calibration offset
    of up to +-sar_offset_db per sample (photometric="sar": SarJitter's own +-2 dB).

    Affine and RandomBrightnessContrast come first, on the contiguous array: after a flip or rotation the
    array is a strided view, on which both run about 2x slower. The distribution is the same as with
    the flips first: the Affine ranges are symmetric under flips and 90-degree turns, and brightness and
    contrast act per pixel (padding included, as before). Affine, RandomRotate90 and
    RandomBrightnessContrast are albumentations' own with faster kernels (above): with them the data
    pipeline runs about 1.5x faster on the demo split."""
    return A.Compose([
        Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
               border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=0.5),
        RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)
        if photometric == "brightness" and not sar_offset_db else SarJitter(offset_db=sar_offset_db or 2.0, p=0.5),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        RandomRotate90(p=0.5),
    ], seed=seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: every worker (and every epoch, without persistent workers) gets its
    own augmentation stream; otherwise all workers would replay the same augmentations."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)
