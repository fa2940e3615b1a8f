"""Datasets of either layout, chosen by DATA_FORMAT, and the data settings a checkpoint records.

"bands": the band-agnostic 02_kfold layout (lib/data/dataset.py); "kompsat5": list files of 16-bit HH
amplitude GeoTIFFs (lib/data/kompsat5/). `checkpoint_dataset` builds a split as a trained model's checkpoint
records its data (evaluate.py, export_onnx.py --int8).
"""
from __future__ import annotations

from lib.data.augmentation import train_augmentation
from lib.data.bands import band_range, normalization_table
from lib.config import Constants, as_constants
from lib.data.dataset import BandPatchDataset

# recorded beside the table it names, for a reader; comparisons of data settings (resume, teacher pairing)
# compare the table itself, and checkpoints from before it was recorded lack it
RECORDED_ONLY = ("normalization_name",)


def data_settings(c: Constants | dict) -> dict:
    """What a model trained with constants `c` expects of its input (kept in every checkpoint): the
    normalization table and its name (NORMALIZATION) among them."""
    c = as_constants(c)
    bands = list(dict.fromkeys([*c["TRAIN_BANDS"], *c["VAL_BANDS"], *(c["INPUT_BANDS"] or ())]))
    settings = {"format": c["DATA_FORMAT"], "train_bands": list(c["TRAIN_BANDS"]), "val_bands": list(c["VAL_BANDS"]),
                "normalization": {band: list(band_range(band, normalization_table(c["NORMALIZATION"]))) for band in bands},
                "normalization_name": c["NORMALIZATION"], "image_size": int(c["IMAGE_SIZE"])}
    if c["INPUT_BANDS"]:  # absent otherwise: a band-agnostic checkpoint's data record stays as it was
        settings["input_bands"] = list(c["INPUT_BANDS"])
    if c["DATA_FORMAT"] == "kompsat5":
        from lib.data.kompsat5 import kompsat5_settings
        settings.update(kompsat5_settings(c))
    return settings


def build_datasets(c: Constants | dict, log=print):
    """(train, val) datasets for the constants `c`; reports counts and skipped items."""
    c = as_constants(c)
    if c["DATA_FORMAT"] == "kompsat5":
        from lib.data.kompsat5 import build_kompsat5_datasets
        train_set, val_set = build_kompsat5_datasets(c)
    else:
        transform = train_augmentation(c["SEED"], sar_offset_db=c["SAR_OFFSET_DB"]) if c["AUGMENT"] else None
        ranges = normalization_table(c["NORMALIZATION"])
        stack = c["INPUT_BANDS"]  # None: one band per sample (band-agnostic); else these bands as channels
        train_set = BandPatchDataset(c["DATA_ROOT"], "train", stack or c["TRAIN_BANDS"], train=True, transform=transform,
                                     ranges=ranges, image_size=c["IMAGE_SIZE"], preload=c["PRELOAD"], stack=stack)
        val_set = BandPatchDataset(c["DATA_ROOT"], "val", c["VAL_BANDS"], train=False, ranges=ranges,
                                   image_size=c["IMAGE_SIZE"], preload=c["PRELOAD"], stack=stack)
    log(f"data {c['DATA_ROOT']} ({c['DATA_FORMAT']}): {train_set.report()}; {val_set.report()}")
    return train_set, val_set


def checkpoint_dataset(data: dict, constants: dict, root, split: str, bands, preload=False):
    """A split of `root` prepared as a checkpoint records its data (checkpoint["data"]: format, normalization,
    image size, KOMPSAT-5 calibration; `constants` its recorded constants, for IMAGE_SIZE where the data
    lacks it and the list files): the band layout root/split in `bands`, or KOMPSAT-5 list files (split
    "val"/"train" take VAL_LIST/TRAIN_LIST, anything else is a list file). `preload` is the band layout's;
    KOMPSAT-5 scenes are read per item."""
    ranges = data.get("normalization") or {}
    image_size = data.get("image_size", constants.get("IMAGE_SIZE"))
    if data.get("format", "bands") == "kompsat5":
        from lib.data.kompsat5 import Kompsat5Dataset
        lists = {"val": constants.get("VAL_LIST", "val.txt"), "train": constants.get("TRAIN_LIST", "train.txt")}
        return Kompsat5Dataset(root, lists.get(split, split), train=False, image_size=image_size, preload=False,
                               calibration_db=float(data.get("calibration_db", 0.0)), ranges=ranges, split=split)
    return BandPatchDataset(root, split, bands, train=False, ranges=ranges, image_size=image_size, preload=preload,
                            stack=data.get("input_bands"))
