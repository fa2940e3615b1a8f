"""The KOMPSAT-5 water-segmentation layout: list files of 16-bit HH amplitude GeoTIFFs and 0/255 masks.

Layout (the published one; paths in the list files are relative to DATA_ROOT):

    DATA_ROOT/train_full/train.txt    one sample a line: image_path<TAB>mask_path
    DATA_ROOT/train_full/val.txt
    DATA_ROOT/train_full/img/WTR00533_K5_NIA0201.tif           uint16, 1 band: HH amplitude (digital numbers)
    DATA_ROOT/train_full/mask/WTR00533_K5_NIA0201_label.tif    integer, 1 band: 255 water, 0 land

List files may hold blank lines, whole-line `#` comments, surrounding whitespace and CRLF line ends.

Input: amplitude to dB, `20*log10(DN) + CALIBRATION_DB` (DN 0 is no-data), then the clip-and-scale
normalization of every band (`lib.data.bands.normalize(db, "HH")`, range BAND_RANGES["HH"]).
Target: mask 255 -> water (1), 0 -> land (0), any other value and DN-0 pixels -> no-data (IGNORE_INDEX,
also 255: mind that a MASK value of 255 means water, a TARGET value of 255 means no-data).

Training sees IMAGE_SIZE crops of the scenes: K5_TRAIN_CROP="random" (a random crop per access,
K5_CROPS_PER_SCENE accesses per scene per epoch) or "tiles" (every IMAGE_SIZE tile of every scene once per
epoch). Validation yields whole scenes, one item each.

One module per concern: io.py reads and checks the files (amplitude to dB, list files, GeoTIFF headers),
dataset.py is the dataset, build.py the engine glue (datasets and checkpoint settings from the constants).
`lib.synthetic.kompsat5.make_kompsat5_dataset` writes a synthetic dataset in this layout (make_kompsat5_demo.py).
"""
from __future__ import annotations

from lib.data.kompsat5.build import build_kompsat5_datasets, kompsat5_settings
from lib.data.kompsat5.dataset import TRAIN_CROPS, Kompsat5Dataset, tile_starts
from lib.data.kompsat5.io import (BAND, CALIBRATION_DB, MAKE_DATA_HINT, MASK_LAND, MASK_WATER, NODATA_DN, Sample,
                             amplitude_to_db, check_sample, hh_image, mask_to_target, preprocess, read_list,
                             read_tiff, tiff_header)

__all__ = ["BAND", "CALIBRATION_DB", "MAKE_DATA_HINT", "MASK_LAND", "MASK_WATER", "NODATA_DN", "TRAIN_CROPS",
           "Kompsat5Dataset", "Sample", "amplitude_to_db", "build_kompsat5_datasets", "check_sample", "hh_image",
           "kompsat5_settings", "mask_to_target", "preprocess", "read_list", "read_tiff", "tile_starts",
           "tiff_header"]

