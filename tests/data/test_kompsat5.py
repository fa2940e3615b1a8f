"""The KOMPSAT-5 layout (lib/data/kompsat5/, lib/synthetic/kompsat5.py), the per-image IoU convention, and the five
KOMPSAT-5 train scripts end to end on tiny synthetic scenes (128 x 128, IMAGE_SIZE 64)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from conftest import ROOT, write_geotiff
from lib.data.bands import BAND_RANGES
from lib.checkpoint import read_checkpoint
from lib.data.factory import build_datasets, data_settings
from lib.data.dataset import DataError
from lib.data.labels import IGNORE_INDEX
from lib.errors import ConfigError
from lib.data.kompsat5 import (Kompsat5Dataset, amplitude_to_db, build_kompsat5_datasets, hh_image, mask_to_target,
                          preprocess, read_list, tile_starts)
from lib.train.metrics import BandConfusion
from lib.synthetic.kompsat5 import make_kompsat5_dataset

SCENE = 128
CROP = 64


@pytest.fixture(scope="session")
def k5_data(tmp_path_factory) -> Path:
    """3 train + 2 val synthetic scenes of 128 x 128 in the published layout."""
    root = tmp_path_factory.mktemp("k5") / "data_k5"
    make_kompsat5_dataset(root, n_train=3, n_val=2, size=SCENE, seed=0)
    return root


def write_tiff(path: Path, array: np.ndarray) -> Path:
    """A 3 m KOMPSAT-5-like GeoTIFF in EPSG:32652 (the published scenes' zone), no nodata tag."""
    return write_geotiff(path, array, crs="EPSG:32652", transform=Affine(3.0, 0.0, 400000.0, 0.0, -3.0, 4100000.0))


def k5_constants(root: Path, **overrides) -> dict:
    c = dict(DATA_FORMAT="kompsat5", DATA_ROOT=str(root), TRAIN_LIST="train_full/train.txt",
             VAL_LIST="train_full/val.txt", IMAGE_SIZE=CROP, SEED=0, AUGMENT=False, PRELOAD=False,
             TRAIN_BANDS=("VV",), VAL_BANDS=("VV",))
    c.update(overrides)
    return c


# ------------------------------------------------------------------------------------ list files

def test_list_parser_tolerates_blank_lines_comments_whitespace_and_crlf(k5_data):
    image = "train_full/img/WTR00000_K5_SYN01.tif"
    mask = "train_full/mask/WTR00000_K5_SYN01_label.tif"
    text = (f"\ufeff# KOMPSAT-5 water scenes\r\n\r\n   {image}\t{mask}  \r\n\t\n  # another comment\r\n"
            f"{image}\t\t{mask}\r\n")
    (k5_data / "messy.txt").write_bytes(text.encode("utf-8"))
    samples = read_list(k5_data, "messy.txt")
    assert [(s.image, s.mask) for s in samples] == [(k5_data / image, k5_data / mask)] * 2
    assert samples[0].where.endswith("messy.txt, line 3") and samples[1].where.endswith("line 6")


def test_demo_lists_use_the_published_layout(k5_data):
    lines = (k5_data / "train_full" / "train.txt").read_text().splitlines()
    assert len(lines) == 3 and len(read_list(k5_data, "train_full/val.txt")) == 2
    image, mask = lines[0].split("\t")
    assert image == "train_full/img/WTR00000_K5_SYN01.tif" and mask == "train_full/mask/WTR00000_K5_SYN01_label.tif"
    with rasterio.open(k5_data / image) as src:
        assert (src.count, src.dtypes[0], src.shape, src.crs.to_epsg()) == (1, "uint16", (SCENE, SCENE), 32652)
    with rasterio.open(k5_data / mask) as src:
        assert src.dtypes[0] == "uint16" and set(np.unique(src.read(1))) <= {0, 255}


def test_line_without_a_tab_names_list_line_and_content(k5_data):
    (k5_data / "bad.txt").write_text("# header\n\ntrain_full/img/a.tif train_full/mask/a_label.tif\n")
    with pytest.raises(DataError) as error:
        read_list(k5_data, "bad.txt")
    message = str(error.value)
    assert "bad.txt, line 3" in message and "no tab" in message and "train_full/img/a.tif" in message


def test_missing_file_names_list_line_and_path(k5_data):
    good = (k5_data / "train_full" / "train.txt").read_text().splitlines()[0]
    (k5_data / "missing.txt").write_text(f"{good}\n\n{good.replace('WTR00000', 'WTR09999', 1)}\n")
    with pytest.raises(DataError) as error:
        read_list(k5_data, "missing.txt")
    message = str(error.value)
    assert "missing.txt, line 3" in message and "WTR09999_K5_SYN01.tif" in message and "does not exist" in message


def test_missing_root_or_list_says_how_to_make_data(k5_data, tmp_path):
    for root, list_file in ((tmp_path / "nowhere", "train_full/train.txt"), (k5_data, "train_full/nope.txt")):
        with pytest.raises(DataError, match="make_kompsat5_demo.py"):
            build_kompsat5_datasets(k5_constants(root, TRAIN_LIST=list_file))


def bad_pair(root: Path, image: np.ndarray, mask: np.ndarray, name: str = "x") -> Path:
    write_tiff(root / "img" / f"{name}.tif", image)
    write_tiff(root / "mask" / f"{name}_label.tif", mask)
    (root / f"{name}.txt").write_text(f"img/{name}.tif\tmask/{name}_label.tif\n")
    return root / f"{name}.txt"


@pytest.mark.parametrize("case, culprit, words", [
    ("uint8 image", "img", "uint16"),
    ("float image", "img", "uint16"),
    ("two bands", "img", "1 band"),
    ("float mask", "mask", "integer mask"),
    ("smaller mask", "mask", "64x64"),
])
def test_bad_files_are_named(tmp_path, case, culprit, words):
    image, mask = np.full((64, 64), 500, np.uint16), np.zeros((64, 64), np.uint16)
    if case == "uint8 image":
        image = image.astype(np.uint8)
    elif case == "float image":
        image = image.astype(np.float32)
    elif case == "two bands":
        image = np.stack([image, image])
    elif case == "float mask":
        mask = mask.astype(np.float32)
    elif case == "smaller mask":
        mask = mask[:32, :32]
    bad_pair(tmp_path, image, mask)
    with pytest.raises(DataError) as error:
        Kompsat5Dataset(tmp_path, "x.txt", train=False, image_size=CROP)
    message = str(error.value)
    expected = tmp_path / "img" / "x.tif" if culprit == "img" else tmp_path / "mask" / "x_label.tif"
    assert str(expected) in message and words in message and "line 1" in message


def test_not_a_tiff_is_named(tmp_path):
    bad_pair(tmp_path, np.full((64, 64), 500, np.uint16), np.zeros((64, 64), np.uint16))
    (tmp_path / "img" / "x.tif").write_bytes(b"\x00garbage, not a TIFF" * 50)
    with pytest.raises(DataError) as error:
        Kompsat5Dataset(tmp_path, "x.txt", train=False, image_size=CROP)
    assert str(tmp_path / "img" / "x.tif") in str(error.value) and "GeoTIFF" in str(error.value)


def test_scene_smaller_than_the_crop_is_named(tmp_path):
    bad_pair(tmp_path, np.full((32, 48), 500, np.uint16), np.zeros((32, 48), np.uint16))
    with pytest.raises(DataError, match=r"32x48, smaller than IMAGE_SIZE 64"):
        Kompsat5Dataset(tmp_path, "x.txt", train=True, image_size=CROP)


# ---------------------------------------------------------------------------- conversion and masks

def test_amplitude_to_db_values_and_nodata():
    dn = np.array([[0, 1, 10, 100], [1000, 10000, 65535, 0]], np.uint16)
    db, nodata = amplitude_to_db(dn)
    assert db.dtype == np.float32 and db.shape == dn.shape
    np.testing.assert_array_equal(nodata, dn == 0)
    assert np.isnan(db[nodata]).all()
    np.testing.assert_allclose(db[~nodata], [0.0, 20.0, 40.0, 60.0, 80.0, 20 * math.log10(65535)], atol=1e-4)
    shifted, _ = amplitude_to_db(dn, calibration_db=-55.5)
    np.testing.assert_allclose(shifted[~nodata], db[~nodata] - 55.5, atol=1e-4)
    _, float_nodata = amplitude_to_db(np.array([np.nan, -3.0, 0.0, 5.0]))
    assert float_nodata.tolist() == [True, True, True, False]


def test_hh_range_and_normalized_input():
    lo, hi = BAND_RANGES["HH"]
    assert (lo, hi) == (20.0, 75.0)
    image, nodata = hh_image(np.array([0, 5, 10, 100, 1000, 65535], np.uint16))
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, [0.0, 0.0, 0.0, 20 / 55, 40 / 55, 1.0], atol=1e-6)
    assert nodata.tolist() == [True, False, False, False, False, False]


def test_mask_255_is_water_0_is_land_rest_no_data():
    mask = np.array([[255, 0, 1], [128, 254, 255]], np.uint16)
    target = mask_to_target(mask)
    assert target.dtype == np.uint8
    assert target.tolist() == [[1, 0, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 1]]
    # DN 0 is no-data whatever the mask says there, water included
    image, target = preprocess(np.array([[0, 0, 100]], np.uint16), np.array([[255, 0, 255]], np.uint16))
    assert target.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 1]] and image[0, :2].tolist() == [0.0, 0.0]


def test_dataset_reads_targets_from_files(tmp_path):
    """A hand-made scene: 255 -> 1, 0 -> 0, DN 0 -> no-data, the whole scene as one val item."""
    dn = np.full((64, 64), 1000, np.uint16)
    dn[:, :8] = 0
    mask = np.zeros((64, 64), np.uint16)
    mask[32:] = 255
    bad_pair(tmp_path, dn, mask)
    for preload in (True, False):
        dataset = Kompsat5Dataset(tmp_path, "x.txt", train=False, image_size=32, preload=preload)
        image, target, band = dataset[0]
        assert image.shape == target.shape == (1, 64, 64) and int(band) == 0 and target.dtype == torch.uint8
        assert (target[0, :, :8] == IGNORE_INDEX).all() and (image[0, :, :8] == 0).all()
        assert (target[0, :32, 8:] == 0).all() and (target[0, 32:, 8:] == 1).all()
        assert torch.allclose(image[0, :, 8:], torch.tensor(40 / 55), atol=1e-3)


# -------------------------------------------------------------------------------------- datasets

def test_random_crops_tiles_and_whole_scenes(k5_data):
    c = k5_constants(k5_data, K5_CROPS_PER_SCENE=5)
    train_set, val_set = build_kompsat5_datasets(c)
    assert len(train_set) == 3 * 5 and len(val_set) == 2
    image, target, band = train_set[7]
    assert image.shape == target.shape == (1, CROP, CROP) and image.dtype == torch.float32 and int(band) == 0
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(torch.unique(target).tolist()) <= {0, 1, IGNORE_INDEX}
    image, target, _ = val_set[1]
    assert image.shape == target.shape == (1, SCENE, SCENE)
    assert "3 scenes" in train_set.report() and "5 per scene" in train_set.report()
    assert "2 whole scenes (128x128)" in val_set.report() and not train_set.skipped

    tiles, _ = build_kompsat5_datasets(c | {"K5_TRAIN_CROP": "tiles"})
    assert len(tiles) == 3 * (SCENE // CROP) ** 2
    whole = Kompsat5Dataset(k5_data, "train_full/train.txt", train=False, image_size=CROP, preload=False)
    top_right = tiles[1]  # scene 0, row 0, col 64
    assert torch.equal(top_right[0], whole[0][0][..., :CROP, CROP:])
    assert torch.equal(top_right[1], whole[0][1][..., :CROP, CROP:])
    assert tile_starts(128, 64) == [0, 64] and tile_starts(130, 64) == [0, 64, 66] and tile_starts(64, 64) == [0]


def test_preloaded_equals_read_from_file(k5_data):
    cached = Kompsat5Dataset(k5_data, "train_full/val.txt", train=False, image_size=CROP, preload=True)
    direct = Kompsat5Dataset(k5_data, "train_full/val.txt", train=False, image_size=CROP, preload=False)
    assert cached.cache is not None and cached.cache[0][0].dtype == np.float16 and direct.cache is None
    for i in range(2):
        assert torch.equal(cached[i][1], direct[i][1])
        assert torch.allclose(cached[i][0], direct[i][0], atol=1e-3)


@pytest.mark.parametrize("value, cached", [("auto", True), ("1", True), ("false", False), (False, False)])
def test_preload_setting_from_the_command_line(k5_data, value, cached):
    train_set, val_set = build_kompsat5_datasets(k5_constants(k5_data, PRELOAD=value))
    assert (train_set.cache is not None) == cached and (val_set.cache is not None) == cached


def test_synthetic_scenes_have_no_data_edges_and_dark_water(k5_data):
    summary = make_kompsat5_dataset(k5_data.parent / "again", n_train=3, n_val=2, size=SCENE, seed=0)
    assert summary["nodata_scenes"] >= 1 and summary["dry_scenes"] >= 1
    assert summary["db_water"]["p50"] < summary["db_land"]["p50"] - 5
    lo, hi = BAND_RANGES["HH"]
    assert lo < summary["db_water"]["p0.5"] and summary["db_land"]["p99"] < hi
    scenes = [scene for split in ("train", "val")
              for scene in Kompsat5Dataset(k5_data, f"train_full/{split}.txt", train=False, image_size=CROP)]
    assert any((target == IGNORE_INDEX).any() for _, target, _ in scenes)  # the DN-0 wedges
    assert any((target == 1).any() for _, target, _ in scenes)


def test_bad_crop_constants_are_config_errors(k5_data):
    with pytest.raises(ConfigError, match="K5_TRAIN_CROP='grid'"):
        build_kompsat5_datasets(k5_constants(k5_data, K5_TRAIN_CROP="grid"))
    with pytest.raises(ConfigError, match="K5_CROPS_PER_SCENE=0"):
        build_kompsat5_datasets(k5_constants(k5_data, K5_CROPS_PER_SCENE=0))


def test_datasets_never_import_the_synthetic_generators():
    """Reading data (both layouts, the engine's data glue) loads no generator; the old import path of the
    KOMPSAT-5 generator is gone (module paths inside lib/ are internal; docs/architecture.md lists the moves)."""
    code = ("import sys; import lib.data.factory, lib.data.dataset, lib.data.kompsat5, lib.data.kompsat5.build; "
            "print(sorted(m for m in sys.modules if m.startswith('lib.synthetic')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.strip() == "[]"
    import lib.data.kompsat5
    assert not hasattr(lib.data.kompsat5, "make_kompsat5_dataset")


def test_data_settings_record_the_conversion(k5_data):
    c = k5_constants(k5_data, CALIBRATION_DB=-3.5, IMAGE_SIZE=256)
    settings = data_settings(c)
    assert settings["format"] == "kompsat5" and settings["val_bands"] == ["HH"]
    assert settings["normalization"] == {"HH": [20.0, 75.0]}
    assert settings["amplitude_to_db"] == "20*log10(DN) + CALIBRATION_DB"
    assert settings["calibration_db"] == -3.5 and settings["nodata_dn"] == 0
    train_set, val_set = build_datasets(k5_constants(k5_data), log=lambda *a: None)
    assert len(val_set) == 2 and train_set.transform is None


# --------------------------------------------------------------------------------- per-image IoU

def logits_of(prediction: list[list[int]]) -> torch.Tensor:
    return (torch.tensor(prediction, dtype=torch.float32) * 2 - 1)[:, None, None, :]  # [B, 1, 1, W]


def targets_of(truth: list[list[int]]) -> torch.Tensor:
    return torch.tensor(truth, dtype=torch.uint8)[:, None, None, :]


def test_per_image_iou_against_hand_computed_values():
    # image 1: tp 1, fp 1, fn 1, tn 1 -> water IoU 1/3
    # image 2: no water; fp 1, tn 3 -> land IoU of the inverted masks 3 / (3 + 1) = 3/4
    # image 3: a no-data pixel predicted water is ignored; tp 3 -> 1
    # image 4: no water, all land predicted -> land IoU 1 (not 0/0)
    truth = [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, IGNORE_INDEX], [0, 0, 0, 0]]
    prediction = [[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    confusion = BandConfusion(("HH",))
    confusion.update(logits_of(prediction[:2]), targets_of(truth[:2]), torch.zeros(2, dtype=torch.long))
    confusion.update(logits_of(prediction[2:]), targets_of(truth[2:]), torch.zeros(2, dtype=torch.long))
    metrics = confusion.compute()
    assert metrics["iou_per_image_HH"] == pytest.approx((1 / 3 + 3 / 4 + 1 + 1) / 4)
    assert metrics["iou_per_image"] == pytest.approx(metrics["iou_per_image_HH"])
    # dataset-wide water IoU: tp 1+0+3+0 = 4, fp 1+1+0+0 = 2, fn 1 -> 4/7
    assert metrics["iou_HH"] == pytest.approx(4 / 7)


def test_per_image_iou_of_a_missed_and_a_hallucinated_water_body():
    # image 1: all water missed -> 0; image 2: dry, all predicted water -> land IoU 0 / (0 + 4) = 0
    # image 3: dry, half predicted water -> land IoU 2/4
    truth = [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    prediction = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    confusion = BandConfusion(("HH",))
    confusion.update(logits_of(prediction), targets_of(truth), torch.zeros(3, dtype=torch.long))
    metrics = confusion.compute()
    assert metrics["iou_per_image_HH"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert metrics["iou_HH"] == pytest.approx(0.0)  # tp 0, fp 6, fn 2


# ------------------------------------------------------------------------------- scripts end to end

COMMON = ["EPOCHS=1", "IMAGE_SIZE=64", "BATCH_SIZE=2", "NUM_WORKERS=0", "DEVICE=cpu"]
K5 = ["DATA_FORMAT=kompsat5", "TRAIN_LIST=train_full/train.txt", "VAL_LIST=train_full/val.txt",
      "K5_CROPS_PER_SCENE=2"]
SCRIPTS = {  # script -> (model name, small-width overrides)
    "train_fcn_vgg16.py": ("FCN_VGG16", ["BASE_CHANNELS=8", "FC_WIDTH=32"]),
    "train_fcn_vgg19.py": ("FCN_VGG19", ["BASE_CHANNELS=8", "FC_WIDTH=32", "BATCH_NORM=0"]),
    "train_unet_classic.py": ("UNet_Classic", ["BASE_CHANNELS=8"]),
    "train_deepunet.py": ("DeepUNet", ["WIDTH=8", "HIDDEN=16"]),
    "train_hrnet.py": ("HRNet", ["HRNET_VARIANT=hrnet_w18_small"]),
}
BANDS_RUN = "train_deepunet.py on 02_kfold"


@pytest.fixture(scope="module")
def script_runs(k5_data, tiny_data, tmp_path_factory) -> dict:
    """Every script once on the KOMPSAT-5 data, and one on the 02_kfold layout (default DATA_FORMAT),
    run as subprocesses side by side (one thread each) to keep the wall time down."""
    out = tmp_path_factory.mktemp("scripts")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    runs = {script: (script, [*K5, f"DATA_ROOT={k5_data}", *small], out / Path(script).stem)
            for script, (_, small) in SCRIPTS.items()}
    runs[BANDS_RUN] = ("train_deepunet.py", [f"DATA_ROOT={tiny_data}", "WIDTH=8", "HIDDEN=16"], out / "bands")
    processes = {name: subprocess.Popen([sys.executable, script, *COMMON, *args, f"OUTPUT_DIR={run_dir}"], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name, (script, args, run_dir) in runs.items()}
    results = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=600)
        results[name] = (process.returncode, output, runs[name][2])
    return results


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_trains_on_kompsat5(script_runs, script):
    returncode, output, run_dir = script_runs[script]
    assert returncode == 0, output
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("val_iou_HH", "val_iou_per_image_HH", "val_iou", "val_iou_per_image"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["model"] == SCRIPTS[script][0] and summary["epochs_run"] == 1
    assert summary["data"]["val_items"] == 2 and summary["data"]["train_patches"] == 3 * 2
    checkpoint = read_checkpoint(run_dir / "best.pt")
    assert checkpoint["data"]["format"] == "kompsat5" and checkpoint["data"]["calibration_db"] == 0.0
    assert checkpoint["data"]["normalization"] == {"HH": [20.0, 75.0]}
    assert "val: 2 whole scenes (128x128)" in output


def test_script_trains_on_the_bands_layout_by_default(script_runs):
    returncode, output, run_dir = script_runs[BANDS_RUN]
    assert returncode == 0, output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "DeepUNet" and (run_dir / "best.pt").is_file()
    assert {"val_iou_VV", "val_iou_VH", "val_iou_per_image_VV"} <= set(summary)
    assert read_checkpoint(run_dir / "best.pt")["data"]["format"] == "bands"
