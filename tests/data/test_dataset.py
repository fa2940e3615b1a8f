from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REAL_DATA
from lib.data.augmentation import train_augmentation
from lib.data.bands import BAND_RANGES, NORMALIZATIONS, SAR_DB_RANGE, normalize
from lib.data.dataset import BandPatchDataset, DataError, index_split
from lib.data.labels import IGNORE_INDEX


def write_split(root: Path, split: str, patches: dict, size: int = 32):
    """patches: {patch_id: {band: array or None for random}, "label": array}"""
    (root / split / "img").mkdir(parents=True, exist_ok=True)
    (root / split / "lab").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for patch_id, files in patches.items():
        for name, array in files.items():
            if array is None:
                array = rng.normal(-12, 4, (size, size)).astype(np.float32)
            if name == "label":
                np.save(root / split / "lab" / f"{patch_id}.npy", array)
            else:
                np.save(root / split / "img" / f"{patch_id}_{name}.npy", array)


def simple_label(size=32):
    label = np.zeros((size, size), np.int16)
    label[:, : size // 2] = 1
    return label


def test_normalization_table_per_band():
    published = NORMALIZATIONS["published"]
    assert published["VV"] == published["VH"] == SAR_DB_RANGE == (-22.225124, 0.0)
    assert BAND_RANGES is NORMALIZATIONS["sar"] and BAND_RANGES["VH"][0] < -30.0  # the default keeps VH water
    image, _ = normalize(np.array([[-30.0, -22.225124, -11.1125620, 0.0, 5.0]]), "VV", published)
    assert np.allclose(image, [[0, 0, 0.5, 1, 1]])
    # optical bands and indices keep their contrast (the dB range would flatten them to 1.0)
    image, _ = normalize(np.array([[0.05, 0.15]]), "B3")
    assert np.allclose(image, [[0.05 / 0.3, 0.5]])
    image, _ = normalize(np.array([[-0.5, 0.5]]), "NDWI", published)
    assert np.allclose(image, [[0.25, 0.75]])
    image, _ = normalize(np.array([[-0.5, 0.5]]), "NDWI")  # "sar": inverted, water dark as in every band
    assert np.allclose(image, [[0.75, 0.25]])


def test_training_draws_random_bands_and_validation_is_deterministic(tmp_path):
    bands = ("VV", "VH", "B2")
    write_split(tmp_path, "train", {f"p{i}": {**{b: None for b in bands}, "label": simple_label()} for i in range(3)})
    write_split(tmp_path, "val", {f"q{i}": {"VV": None, "VH": None, "label": simple_label()} for i in range(2)})
    train = BandPatchDataset(tmp_path, "train", bands, train=True, image_size=32)
    seen = Counter(int(train[0][2]) for _ in range(200))
    assert len(train) == 3 and set(seen) == {0, 1, 2}
    val = BandPatchDataset(tmp_path, "val", ("VV", "VH"), train=False, image_size=32)
    assert len(val) == 4
    assert [int(val[i][2]) for i in range(4)] == [0, 1, 0, 1]
    first = [val[i][0] for i in range(4)]
    assert all(torch.equal(a, val[i][0]) for i, a in enumerate(first))


def test_items_are_float_images_in_unit_range_and_uint8_targets(tmp_path):
    write_split(tmp_path, "val", {"p": {"VV": None, "VH": None, "label": simple_label()}})
    image, target, band = BandPatchDataset(tmp_path, "val", ("VV", "VH"), train=False, image_size=32)[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert target.shape == (1, 32, 32) and target.dtype == torch.uint8 and band.dtype == torch.long


@pytest.mark.parametrize("preload", [True, False])
def test_nodata_labels_and_nan_pixels_are_ignored(tmp_path, preload):
    label = simple_label()
    label[0, :] = -1
    label[1, :] = 7
    vv = np.full((32, 32), -10.0, np.float32)
    vv[5, 5], vv[6, 6] = np.nan, np.inf
    write_split(tmp_path, "val", {"p": {"VV": vv, "VH": None, "label": label}})
    dataset = BandPatchDataset(tmp_path, "val", ("VV", "VH"), train=False, image_size=32, preload=preload)
    image, target, _ = dataset[0]
    assert (target[0, 0] == IGNORE_INDEX).all() and (target[0, 1] == IGNORE_INDEX).all()
    assert target[0, 5, 5] == IGNORE_INDEX and target[0, 6, 6] == IGNORE_INDEX
    assert torch.isfinite(image).all()
    _, target_vh, _ = dataset[1]  # NaN in VV does not blank the VH item
    assert target_vh[0, 5, 5] != IGNORE_INDEX


def test_patch_missing_a_band_is_skipped_and_counted(tmp_path):
    write_split(tmp_path, "train", {"full": {"VV": None, "VH": None, "label": simple_label()},
                                    "novh": {"VV": None, "label": simple_label()},
                                    "nolabel": {"VV": None, "VH": None}})
    index = index_split(tmp_path, "train", ("VV", "VH"), 32)
    assert [p[0] for p in index.patches] == ["full"]
    assert index.skipped == Counter({"missing band VH": 1, "band files without label": 1})
    assert "skipped 2" in index.report()


def test_wrong_shape_is_an_error_naming_the_file(tmp_path):
    write_split(tmp_path, "train", {"p": {"VV": np.zeros((16, 32), np.float32), "label": simple_label()}})
    with pytest.raises(DataError, match=r"p_VV\.npy.*shape"):
        index_split(tmp_path, "train", ("VV",), 32)


def test_unreadable_file_is_an_error_naming_the_file(tmp_path):
    write_split(tmp_path, "train", {"p": {"VV": None, "label": simple_label()}})
    (tmp_path / "train" / "img" / "p_VV.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"p_VV\.npy: not a readable"):
        index_split(tmp_path, "train", ("VV",), 32)


def test_missing_data_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="make_demo_data.py"):
        index_split(tmp_path / "nothing", "train", ("VV",))


def test_preloaded_cache_is_float32_when_small_float16_when_large_and_never_changed(tmp_path, monkeypatch):
    write_split(tmp_path, "train", {f"p{i}": {"VV": None, "VH": None, "label": simple_label()} for i in range(3)})
    dataset = BandPatchDataset(tmp_path, "train", ("VV", "VH"), train=True, image_size=32, preload=True,
                               transform=train_augmentation(seed=0))
    assert dataset.cache[0][0][0].dtype == np.float32
    before = [[image.copy() for image in images] for images, _ in dataset.cache]
    for _ in range(20):  # augmentation works on the cached arrays: it must never write into them
        for item in range(len(dataset)):
            dataset[item]
    assert all(np.array_equal(a, b) for old, (new, _) in zip(before, dataset.cache) for a, b in zip(old, new))
    import lib.data.dataset
    monkeypatch.setattr(lib.data.dataset, "FLOAT32_CACHE_BYTES", 1000)  # a split too large for float32
    half = BandPatchDataset(tmp_path, "train", ("VV", "VH"), train=False, image_size=32, preload=True)
    assert half.cache[0][0][0].dtype == np.float16 and half[0][0].dtype == torch.float32


def test_augmentation_keeps_mask_aligned_and_pads_with_nodata():
    transform = train_augmentation(seed=3)
    rng = np.random.default_rng(0)
    mask = (rng.random((64, 64)) < 0.5).astype(np.uint8)
    image = mask.astype(np.float32) * 0.5 + 0.25  # image encodes the mask exactly
    padded = 0
    for _ in range(30):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (64, 64) and out["image"].dtype == np.float32
        valid = out["mask"] != IGNORE_INDEX
        padded += int((~valid).sum())
        # interpolation blurs edges, so compare away from them: where the image is clearly bright, mask is 1
        assert set(np.unique(out["mask"])) <= {0, 1, IGNORE_INDEX}
        bright, dark = out["image"] > 0.8 * out["image"].max(), out["image"] < 0.2 + out["image"].min()
        assert (out["mask"][bright & valid] == 1).mean() > 0.95
        assert (out["mask"][dark & valid] == 0).mean() > 0.95
    assert padded > 0  # Affine padding became no-data, not dry land


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real Sen1Floods11 chip not present in ../shared")
def test_real_sen1floods11_chip_loads_normalizes_and_ignores_nodata():
    val = BandPatchDataset(REAL_DATA, "val", ("VV", "VH"), train=False, ranges=NORMALIZATIONS["published"])
    raw_vv = np.load(REAL_DATA / "val" / "img" / f"{val.patches[0][0]}_VV.npy")
    raw_label = np.load(REAL_DATA / "val" / "lab" / f"{val.patches[0][0]}.npy")
    image, target, _ = val[0]
    assert (raw_vv < SAR_DB_RANGE[0]).any() or (raw_vv > SAR_DB_RANGE[1]).any()  # real values exceed the range
    assert image.min() == 0.0 and image.max() <= 1.0
    expected = np.clip((raw_vv + 22.225124) / 22.225124, 0, 1)
    assert np.allclose(image[0].numpy(), np.nan_to_num(expected), atol=1e-6)  # small split: float32 cache
    assert ((target[0].numpy() == IGNORE_INDEX) == ~np.isin(raw_label, [0, 1])).all()
    train = BandPatchDataset(REAL_DATA, "train", ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), train=True)
    assert len(train) == 2 and not train.skipped


def test_faster_transforms_give_albumentations_own_results():
    import albumentations as A
    import cv2

    from lib.data import augmentation
    rng = np.random.default_rng(1)
    image = rng.random((48, 40), dtype=np.float32)
    mask = (rng.random((48, 40)) < 0.4).astype(np.uint8)
    affine = dict(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                  border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=0.7)
    for seed in range(12):
        theirs = A.Compose([A.Affine(**affine), A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
                            A.RandomRotate90(p=0.8)], seed=seed)(image=image, mask=mask)
        ours = A.Compose([augmentation.Affine(**affine), augmentation.RandomBrightnessContrast(0.2, 0.2, p=0.7),
                          augmentation.RandomRotate90(p=0.8)], seed=seed)(image=image, mask=mask)
        assert ours["image"].dtype == np.float32 and ours["image"].flags.c_contiguous
        assert np.allclose(ours["image"], theirs["image"], atol=1e-6)
        assert np.array_equal(ours["mask"], theirs["mask"])
    assert not np.array_equal(ours["image"], image)  # something was applied
