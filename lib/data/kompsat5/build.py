"""Engine glue of the KOMPSAT-5 layout: the (train, val) datasets for the constants, and the data settings
a checkpoint records (lib.data.factory calls both when DATA_FORMAT="kompsat5")."""
from __future__ import annotations

from lib.config import as_constants
from lib.data.kompsat5.dataset import Kompsat5Dataset
from lib.data.kompsat5.io import MASK_LAND, MASK_WATER, NODATA_DN


def kompsat5_settings(c: dict) -> dict:
    """Data settings a checkpoint records so evaluation and prediction repeat the conversion."""
    return {"amplitude_to_db": "20*log10(DN) + CALIBRATION_DB", "calibration_db": float(c.get("CALIBRATION_DB", 0.0)),
            "nodata_dn": NODATA_DN, "image_dtype": "uint16",
            "mask_values": {"water": MASK_WATER, "land": MASK_LAND, "other": "no-data"}}


def build_kompsat5_datasets(c: dict):
    """(train, val) datasets of the KOMPSAT-5 layout for the constants `c`."""
    from lib.data.augmentation import train_augmentation  # imports lib.data.dataset, as this module does

    c = as_constants(c)  # resolved once (lib/config.py); a plain dict is checked here
    crop, crops = c.get("K5_TRAIN_CROP", "random"), c.get("K5_CROPS_PER_SCENE", 16)
    common = dict(image_size=c["IMAGE_SIZE"], preload=c["PRELOAD"], calibration_db=float(c.get("CALIBRATION_DB", 0.0)))
    transform = train_augmentation(c["SEED"]) if c["AUGMENT"] else None
    train_set = Kompsat5Dataset(c["DATA_ROOT"], c["TRAIN_LIST"], train=True, crop=crop, crops_per_scene=crops,
                                transform=transform, split="train", **common)
    val_set = Kompsat5Dataset(c["DATA_ROOT"], c["VAL_LIST"], train=False, split="val", **common)
    return train_set, val_set
