"""prepare_data.py and lib/prepare/: each release format from tiny rasters written here with rasterio, value by
value; folds without leakage; counted skips; a refused or failed run that leaves --out as it was; the data
report's numbers computed by hand; the real Sen1Floods11 chip against the hand-made shared patches."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import REAL_DATA, ROOT, write_geotiff
from lib.data.dataset import index_split
from lib.data.labels import IGNORE_INDEX, label_to_target
from lib.errors import ConfigError, DataError
from lib.prepare.output import write_patch
from lib.prepare.report import BINS_PER_RANGE, band_edges, build_report, collect, read_split
from lib.prepare.sources import Chip
from lib.prepare.splits import assign, cut, grid, group_of
from lib.prepare.threshold import fit_threshold, threshold_iou
from prepare_data import main

REAL_ORIGINAL = REAL_DATA.parent / "original"
SIZE, PATCH = 8, 4                      # 8 x 8 chips cut into four 4 x 4 patches
S2_NAMES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def write_tif(path: Path, array, nodata=None, dtype=None) -> Path:
    """A chip in EPSG:4326 near Spain, as the Sen1Floods11 release ships them."""
    return write_geotiff(path, array, crs="EPSG:4326", transform=Affine(0.001, 0, -3.0, 0, -0.001, 40.0),
                         dtype=dtype, nodata=nodata)


def windows(array: np.ndarray):
    """{"r0c0": window, ...} of an 8 x 8 array, as prepare_data.py names its 4 x 4 patches."""
    return {f"r{i}c{j}": array[..., i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] for i in (0, 1) for j in (0, 1)}


# ------------------------------------------------------------------------------------ sen1floods11

def sen1floods11_chip(root: Path, chip: str, seed: int, s2: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    s1 = rng.normal(-12, 5, (2, SIZE, SIZE)).astype(np.float32)
    s1[0, 1, 1] = np.nan                                   # S1Hand no-data
    label = rng.integers(0, 2, (SIZE, SIZE)).astype(np.int16)
    label[0, 0] = -1
    write_tif(root / "S1Hand" / f"{chip}_S1Hand.tif", s1, nodata=np.nan)
    write_tif(root / "LabelHand" / f"{chip}_LabelHand.tif", label)
    raw = {"S1": s1, "label": label}
    if s2:
        bands = rng.integers(100, 3000, (13, SIZE, SIZE)).astype(np.int16)
        bands[1, 2, 2] = 0                                 # B2 no-data (the S2Hand nodata tag is 0)
        bands[3, 5, 5] = 0                                 # B4 no-data: NDVI no-data there too
        bands[7, 6, 6] = -bands[3, 6, 6]                   # B8 + B4 = 0: NDVI no-data
        write_tif(root / "S2Hand" / f"{chip}_S2Hand.tif", bands, nodata=0)
        raw["S2"] = bands
    return raw


@pytest.fixture(scope="module")
def sen1floods11(tmp_path_factory):
    """A release-like folder: 6 good chips in the four split files (one without S2), a chip whose S1 file
    is broken, a listed chip whose label is missing, and one chip in no split file."""
    root = tmp_path_factory.mktemp("s1f11") / "v1.1"
    data = root / "data" / "flood_events" / "HandLabeled"
    raw = {chip: sen1floods11_chip(data, chip, seed, s2=chip != "USA_1")
           for seed, chip in enumerate(["Spain_1", "Spain_2", "USA_1", "Ghana_1", "India_1", "Bolivia_1", "Other_1"])}
    (data / "S1Hand" / "Peru_1_S1Hand.tif").write_bytes(b"this is not a GeoTIFF")
    write_tif(data / "LabelHand" / "Peru_1_LabelHand.tif", np.zeros((SIZE, SIZE), np.int16))
    sen1floods11_chip(data, "Chad_1", 9)
    (data / "LabelHand" / "Chad_1_LabelHand.tif").unlink()
    splits = root / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True)
    rows = {"train": ["Spain_1", "Spain_2", "USA_1", "Chad_1"], "valid": ["Ghana_1", "Peru_1"], "test": ["India_1"],
            "bolivia": ["Bolivia_1"]}
    for name, chips in rows.items():
        (splits / f"flood_{name}_data.csv").write_text("".join(f"{c}_S1Hand.tif,{c}_LabelHand.tif\n" for c in chips))
    return root, raw


@pytest.fixture(scope="module")
def converted(sen1floods11, tmp_path_factory):
    source, raw = sen1floods11
    out = tmp_path_factory.mktemp("out") / "s1f11"
    record = main(["sen1floods11", str(source), "--out", str(out), "--patch", str(PATCH)])
    return out, record, raw


def test_sen1floods11_values(converted):
    out, _, raw = converted
    for chip, split in (("Spain_1", "train"), ("Ghana_1", "val"), ("India_1", "test"), ("Bolivia_1", "bolivia")):
        s1, s2, label = raw[chip]["S1"], raw[chip]["S2"], raw[chip]["label"]
        reflectance = np.where(s2 == 0, np.nan, s2.astype(np.float64) / 10000)
        b3, b4, b8 = (reflectance[S2_NAMES.index(b)] for b in ("B3", "B4", "B8"))
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = {"VV": s1[0], "VH": s1[1], "B2": reflectance[1], "B3": b3, "B4": b4,
                        "NDVI": np.where(b8 + b4 == 0, np.nan, (b8 - b4) / (b8 + b4)),
                        "NDWI": np.where(b3 + b8 == 0, np.nan, (b3 - b8) / (b3 + b8))}
        target = np.where(label == -1, IGNORE_INDEX, label).astype(np.uint8)
        for position, window in windows(target).items():
            patch_id = f"{chip}_{position}"
            written = np.load(out / split / "lab" / f"{patch_id}.npy")
            assert written.dtype == np.uint8
            np.testing.assert_array_equal(written, window)
            for band, values in expected.items():
                array = np.load(out / split / "img" / f"{patch_id}_{band}.npy")
                assert array.dtype == np.float32
                np.testing.assert_allclose(array, windows(values)[position], rtol=1e-6, atol=1e-7, err_msg=patch_id + band)
    spain = np.load(out / "train" / "img" / "Spain_1_r1c1_NDVI.npy")
    assert np.isnan(spain[1, 1]) and np.isnan(spain[2, 2])    # (5, 5): B4 missing; (6, 6): B8 + B4 = 0
    assert np.isnan(np.load(out / "train" / "img" / "Spain_1_r0c0_VV.npy")[1, 1])
    assert np.isnan(np.load(out / "train" / "img" / "Spain_1_r0c0_B2.npy")[2, 2])


def test_sen1floods11_counts_and_provenance(converted, sen1floods11):
    out, record, _ = converted
    splits = record["splits"]
    assert splits["train"]["chips"] == 3 and splits["train"]["patches"] == 12
    assert splits["train"]["skipped"] == {"missing label file": 1}
    assert splits["train"]["notes"] == {"no S2: VV/VH only": 1}
    assert splits["val"] == {"chips": 1, "patches": 4, "skipped": {"unreadable file": 1}, "notes": {}}
    assert splits["(not split)"]["skipped"] == {"not in any split file": 1}
    assert sorted((out / "train" / "img").glob("USA_1_*")) == sorted(
        out / "train" / "img" / f"USA_1_{p}_{b}.npy" for p in windows(np.zeros((SIZE, SIZE))) for b in ("VH", "VV"))
    saved = json.loads((out / "prepare.json").read_text())
    assert saved["format"] == "sen1floods11" and saved["options"]["patch"] == PATCH
    assert saved["chips"]["India_1"]["splits"] == ["test"] and saved["chips"]["Spain_2"]["splits"] == ["train"]
    assert saved["chips"]["Spain_1"]["crs"] == "EPSG:4326"
    assert saved["chips"]["Spain_1"]["transform"] == pytest.approx([0.001, 0, -3.0, 0, -0.001, 40.0])
    assert saved["chips"]["Spain_1"]["patches"]["Spain_1_r1c0"]["row"] == PATCH
    source = sen1floods11[0]
    label = "data/flood_events/HandLabeled/LabelHand/Spain_1_LabelHand.tif"
    assert saved["files"][label] == (source / label).stat().st_size
    assert saved["files"]["splits/flood_handlabeled/flood_train_data.csv"] > 0
    assert {"numpy", "rasterio", "gdal"} <= set(saved["versions"])
    assert any("Peru_1_S1Hand.tif" in skip["message"] for skip in saved["skipped"])
    assert (out / "data_report.md").is_file() and (out / "data_report.png").stat().st_size > 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["val"]["bands"]["VV"]["threshold"]["fitted_on"] == "train"


def test_dataset_reads_the_output(converted):
    out, _, _ = converted
    train = index_split(out, "train", ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), image_size=PATCH)
    assert len(train.patches) == 8 and train.skipped["missing band B2"] == 4   # USA_1 has no S2
    assert len(index_split(out, "val", ("VV", "VH"), image_size=PATCH).patches) == 4


def test_folds_keep_regions_whole(sen1floods11, tmp_path):
    source, _ = sen1floods11
    out = tmp_path / "folds"
    main(["sen1floods11", str(source), "--out", str(out), "--patch", str(PATCH), "--folds", "2", "--group-by", "region"])
    pooled = {"Spain_1", "Spain_2", "USA_1", "Ghana_1"}
    chips_in = lambda folder: {p.stem for p in (folder / "lab").glob("*.npy")}  # patch ids
    seen_val = set()
    for k in (1, 2):
        train, val = chips_in(out / f"fold_{k}" / "train"), chips_in(out / f"fold_{k}" / "val")
        train_chips = {p.rsplit("_", 1)[0] for p in train}
        val_chips = {p.rsplit("_", 1)[0] for p in val}
        assert not train_chips & val_chips and train_chips | val_chips == pooled
        assert len({c.split("_")[0] for c in val_chips} & {c.split("_")[0] for c in train_chips}) == 0
        seen_val |= val_chips
    assert seen_val == pooled                                   # every chip is validated in exactly one fold
    assert chips_in(out / "test") == {"India_1_r0c0", "India_1_r0c1", "India_1_r1c0", "India_1_r1c1"}
    assert (out / "bolivia" / "lab").is_dir() and not (out / "train").exists()
    # the folds share one copy of each patch; the report sums fold_k/train from the other folds' val
    stats = collect(out)
    for k in (1, 2):
        direct = read_split(out, f"fold_{k}/train")
        assert stats[f"fold_{k}/train"].patches == direct.patches
        np.testing.assert_array_equal(stats[f"fold_{k}/train"].bands["VV"].water.counts, direct.bands["VV"].water.counts)


def test_assign_keeps_groups_on_one_side():
    """12 chips of 3 countries into 3 folds by region: each country wholly in one fold's val, the folds
    balanced by area; by chip, every chip in exactly one val; a regex key; the hold-outs untouched."""
    sizes = {"Spain": 64, "Ghana": 32, "India": 16}
    chips = [Chip(f"{country}_{k}", {}, size, size, {}, "train") for country, size in sizes.items() for k in range(4)]
    chips.append(Chip("Bolivia_1", {}, 8, 8, {}, "bolivia"))
    destinations, _ = assign(chips, folds=3, val_share=0.2, group_by="region", seed=0)
    val_fold = {c: next(d for d in dests if d.endswith("/val")) for c, dests in destinations.items() if c != "Bolivia_1"}
    for country in sizes:
        assert len({fold for chip, fold in val_fold.items() if chip.startswith(country)}) == 1
    assert len(set(val_fold.values())) == 3 and destinations["Bolivia_1"] == ["bolivia"]
    assert sorted(destinations["Spain_0"]) == sorted([val_fold["Spain_0"]] + [
        f"fold_{k}/train" for k in (1, 2, 3) if f"fold_{k}/val" != val_fold["Spain_0"]])
    by_chip, _ = assign(chips, folds=4, val_share=0.2, group_by="chip", seed=1)
    assert all(sum(d.endswith("/val") for d in dests) == 1 for c, dests in by_chip.items() if c != "Bolivia_1")
    assert group_of("Spain_7370579", "region") == "Spain" and group_of("S2A_T30SXH_0001", r"_(T\d\d\w{3})_") == "T30SXH"
    with pytest.raises(ConfigError, match="only 3 group"):
        assign(chips, folds=4, val_share=0.2, group_by="region", seed=0)


def test_existing_out_refused_and_kept_on_failure(sen1floods11, tmp_path):
    source, _ = sen1floods11
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier data")
    with pytest.raises(ConfigError, match="already holds data; pass --overwrite"):
        main(["sen1floods11", str(source), "--out", str(out)])
    with pytest.raises(ConfigError, match="--folds 9: only"):            # fails after the checks: out untouched
        main(["sen1floods11", str(source), "--out", str(out), "--overwrite", "--folds", "9"])
    empty = tmp_path / "empty_source"
    empty.mkdir()
    with pytest.raises(DataError, match="no usable chip"):
        main(["sen1floods11", str(empty), "--out", str(out), "--overwrite"])
    assert (out / "keep.txt").read_text() == "earlier data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_source", "out"]   # no staging folder left
    main(["sen1floods11", str(source), "--out", str(out), "--overwrite", "--patch", str(PATCH)])
    assert not (out / "keep.txt").exists() and (out / "prepare.json").is_file()
    with pytest.raises(ConfigError, match="holds SOURCE"):
        main(["sen1floods11", str(source), "--out", str(source.parent), "--overwrite"])


# ------------------------------------------------------------------------------------------ s1-chips

def test_s1_chips_stac_overflow_layout(tmp_path):
    """{chip}_vv.tif, {chip}_vh.tif in one folder, {chip}.tif labels (1, 0, 255 ignore) in another, VV/VH
    0.0 missing; a chip without VH, a label with an undeclared value."""
    source = tmp_path / "stac"
    rng = np.random.default_rng(0)
    vv = rng.normal(-15, 3, (3, SIZE, SIZE)).astype(np.float32)
    vh = rng.normal(-22, 3, (3, SIZE, SIZE)).astype(np.float32)
    vv[0, 3, 3] = 0.0
    labels = rng.integers(0, 2, (3, SIZE, SIZE)).astype(np.uint8)
    labels[0, 0, :] = 255
    labels[2, 4, 4] = 7
    for k, chip in enumerate(["awc00", "awc01", "kuo02"]):
        write_tif(source / "train_features" / f"{chip}_vv.tif", vv[k])
        write_tif(source / "train_labels" / f"{chip}.tif", labels[k])
        if chip != "awc01":
            write_tif(source / "train_features" / f"{chip}_vh.tif", vh[k])
    out = tmp_path / "out"
    record = main(["s1-chips", str(source), "--out", str(out), "--patch", str(PATCH), "--val-share", "0"])
    assert record["splits"]["(not split)"]["skipped"] == {"missing band file": 1}
    assert record["splits"]["train"]["skipped"] == {"unexpected label values": 1}
    assert any("kuo02.tif: label values 7" in skip["message"] for skip in record["skipped"])
    vv_patch = np.load(out / "train" / "img" / "awc00_r0c0_VV.npy")
    missing = np.zeros((PATCH, PATCH), bool)
    missing[3, 3] = True                                                 # VV 0.0 is missing
    np.testing.assert_array_equal(np.isnan(vv_patch), missing)
    np.testing.assert_array_equal(np.load(out / "train" / "img" / "awc00_r1c1_VH.npy"), vh[0, 4:, 4:])
    label = np.load(out / "train" / "lab" / "awc00_r0c1.npy")
    np.testing.assert_array_equal(label, labels[0, :4, 4:])           # 255 stays no-data, 0/1 stay
    assert sorted(p.stem for p in (out / "train" / "lab").glob("*.npy")) == [f"awc00_r{i}c{j}" for i in (0, 1) for j in (0, 1)]


def test_s1_chips_two_band_files_and_label_options(tmp_path):
    """C2S-MS style: one VV,VH file per chip and a label with 2 water, 1 land, -1 no-data, nodata tag -9."""
    source = tmp_path / "c2s"
    rng = np.random.default_rng(1)
    for chip in ("chipA", "chipB"):
        write_tif(source / f"{chip}_S1Hand.tif", rng.normal(-14, 4, (2, SIZE, SIZE)).astype(np.float32))
        label = rng.choice(np.array([2, 1, -1, -9], np.int16), (SIZE, SIZE))
        write_tif(source / f"{chip}_S1LabelHand.tif", label, nodata=-9)
    out = tmp_path / "out"
    main(["s1-chips", str(source), "--out", str(out), "--patch", str(PATCH), "--image-pattern", "{chip}_S1Hand.tif",
          "--label-pattern", "{chip}_S1LabelHand.tif", "--bands", "VV,VH", "--water", "2", "--land", "1",
          "--nodata", "-1", "--val-share", "0.5"])
    for split in ("train", "val"):
        (chip,) = {p.stem.rsplit("_", 1)[0] for p in (out / split / "lab").glob("*.npy")}
        with rasterio.open(source / f"{chip}_S1LabelHand.tif") as dataset:
            raw = dataset.read(1)
        expected = np.select([raw == 2, raw == 1], [1, 0], IGNORE_INDEX).astype(np.uint8)
        np.testing.assert_array_equal(np.load(out / split / "lab" / f"{chip}_r1c0.npy"), expected[4:, :4])
        with rasterio.open(source / f"{chip}_S1Hand.tif") as dataset:
            np.testing.assert_array_equal(np.load(out / split / "img" / f"{chip}_r1c0_VH.npy"), dataset.read(2)[4:, :4])


# ------------------------------------------------------------------------------------------- geotiff

def test_geotiff_scenes_grid_padding_and_min_valid(tmp_path):
    """A 10 x 7 scene on a 4-pixel grid: 3 x 2 windows, the last ones padded with no-data; windows with less
    than half valid pixels are dropped and counted. A broken label file is counted."""
    source = tmp_path / "scenes"
    rng = np.random.default_rng(2)
    image = rng.normal(-12, 4, (2, 10, 7)).astype(np.float32)
    label = rng.integers(0, 2, (10, 7)).astype(np.uint8)
    write_tif(source / "images" / "scene_a.tif", image)
    write_tif(source / "labels" / "scene_a.tif", label)
    write_tif(source / "images" / "scene_b.tif", image)
    (source / "labels" / "scene_b.tif").write_bytes(b"II*\x00broken")
    out = tmp_path / "out"
    record = main(["geotiff", str(source), "--out", str(out), "--bands", "VV,VH", "--patch", "4", "--val-share", "0"])
    assert grid(10, 4, 4) == 3 and grid(7, 4, 4) == 2
    written = sorted(p.stem for p in (out / "train" / "lab").glob("*.npy"))
    # valid shares: r0c0, r1c0 full; r0c1, r1c1 3 of 4 columns; r2c0 2 of 4 rows (kept: 0.5); r2c1 0.375 (dropped)
    assert written == ["scene_a_r0c0", "scene_a_r0c1", "scene_a_r1c0", "scene_a_r1c1", "scene_a_r2c0"]
    assert record["splits"]["train"]["skipped"] == {"too little valid data (< 0.5)": 1}
    assert record["splits"]["(not split)"]["skipped"] == {"unreadable file": 1}
    edge = np.load(out / "train" / "img" / "scene_a_r1c1_VH.npy")
    np.testing.assert_array_equal(edge[:, :3], image[1, 4:8, 4:7])
    assert np.isnan(edge[:, 3]).all()
    assert (np.load(out / "train" / "lab" / "scene_a_r2c0.npy")[2:] == IGNORE_INDEX).all()
    assert record["chips"]["scene_a"]["dropped"] == {"scene_a_r2c1": "too little valid data (< 0.5): 0.375 valid"}


def test_cut_with_overlapping_stride():
    label = np.zeros((6, 6), np.uint8)
    windows_ = list(cut({"VV": np.arange(36, dtype=np.float32).reshape(6, 6)}, label, patch=4, stride=2))
    assert [(i, j) for i, j, _, _ in windows_] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    np.testing.assert_array_equal(windows_[3][2]["VV"], np.arange(36).reshape(6, 6)[2:, 2:])


def test_bad_options_are_config_errors(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ConfigError, match="--bands is required"):
        main(["geotiff", str(tmp_path / "src")])
    with pytest.raises(ConfigError, match="no normalization range"):
        main(["geotiff", str(tmp_path / "src"), "--bands", "VV,XX"])
    with pytest.raises(ConfigError, match=r"\{chip\} exactly once"):
        main(["s1-chips", str(tmp_path / "src"), "--label-pattern", "labels.tif"])
    with pytest.raises(ConfigError, match="is not a folder"):
        main(["s1-chips", str(tmp_path / "nowhere")])


def test_command_line_error_line_and_no_abbreviations(tmp_path):
    result = subprocess.run([sys.executable, "prepare_data.py", "s1-chips", str(tmp_path / "nowhere")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: SOURCE")
    result = subprocess.run([sys.executable, "prepare_data.py", "s1-chips", str(tmp_path), "--overw"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unrecognized arguments: --overw" in result.stderr


# -------------------------------------------------------------------------------------------- report

def test_report_numbers_by_hand(tmp_path, monkeypatch):
    import lib.data.bands
    monkeypatch.setattr(lib.data.bands, "BAND_RANGES", lib.data.bands.NORMALIZATIONS["published"])  # the -22.2 .. 0 dB range
    root = tmp_path / "layout"
    write_patch(root, ["train"], "a_r0c0", {"VV": [[-30, -25, -10, -5], [-28, np.nan, 2, -8]], "XX": np.zeros((2, 4))},
                [[1, 1, 0, 0], [1, 1, 0, 255]])
    write_patch(root, ["val"], "b_r0c0", {"VV": [[-20, -12], [-15, -1]]}, [[1, 1], [0, 0]])
    report, _ = build_report(root)
    vv = report["splits"]["train"]["bands"]["VV"]
    # water: -30, -25, -28 (the NaN pixel and the no-data label left out); land: -10, -5, 2
    assert (vv["water_pixels"], vv["land_pixels"], vv["pixels"]) == (3, 3, 8)
    assert vv["water_share"] == 0.5 and vv["nodata_share"] == 0.25
    assert vv["water_out_of_range"] == 1.0                     # all below -22.2 dB
    assert vv["land_out_of_range"] == pytest.approx(1 / 3) and vv["land_above_range"] == pytest.approx(1 / 3)
    bin_width = 22.225124 / BINS_PER_RANGE
    for got, expected in zip(vv["water_percentiles"].values(), (-30, -28, -25)):   # inverse CDF of 3 values
        assert got == pytest.approx(expected, abs=bin_width)
    for got, expected in zip(vv["land_percentiles"].values(), (-10, -5, 2)):
        assert got == pytest.approx(expected, abs=bin_width)
    threshold = vv["threshold"]
    assert threshold["polarity"] == "below" and -25 < threshold["value"] <= -10 and threshold["iou_fitted_on"] == 1.0
    assert threshold["value"] == pytest.approx(-17.5, abs=bin_width)             # the middle of the best run
    val = report["splits"]["val"]["bands"]["VV"]
    assert val["threshold"]["fitted_on"] == "train" and val["threshold"]["iou"] == 0.5   # TP -20, FN -12
    assert report["splits"]["train"]["skipped"] == {"band XX: no normalization range in lib/data/bands.py": 1}


def test_threshold_polarity_and_scoring():
    edges = band_edges("NDWI")
    counts = lambda values: np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    fit = fit_threshold(counts([0.3, 0.5, 0.1]), counts([-0.4, -0.2, 0.2]), edges)
    # water bright, water where NDWI >= t: 0.2 < t <= 0.3 gives TP 2, FP 0, FN 1 (IoU 2/3); -0.2 < t <= 0.1
    # gives TP 3, FP 1 (3/4), the best; its middle is -0.05
    assert fit["polarity"] == "above" and fit["iou"] == 0.75
    assert fit["threshold"] == pytest.approx(-0.05, abs=2 / BINS_PER_RANGE)
    assert threshold_iou(counts([0.0, 0.4]), counts([-0.5]), fit) == 1.0
    assert threshold_iou(counts([-0.1]), counts([0.0]), fit) == 0.0
    assert fit_threshold(counts([]), counts([0.1]), edges) is None


def test_report_command(converted, capsys):
    out, _, _ = converted
    (out / "data_report.md").unlink()
    report = main(["report", str(out)])
    assert (out / "data_report.md").is_file() and "## train: 12 patches" in capsys.readouterr().out
    assert set(report["splits"]) == {"train", "val", "test", "bolivia"}
    assert report["splits"]["train"]["bands"]["B2"]["patches"] == 8


# ------------------------------------------------------------------------------------- the real chip

@pytest.mark.skipif(not REAL_ORIGINAL.is_dir(), reason="real Sen1Floods11 chip not present in ../shared")
def test_real_chip_matches_the_shared_patches(tmp_path):
    """The shared 02_kfold holds the chip split by rows (top patches train, bottom val with VV/VH only);
    prepare_data.py keeps the chip whole, so compare patch by patch. Its NDVI/NDWI were made with 1e-6 added
    to the denominator: within 1e-5."""
    out = tmp_path / "real"
    record = main(["sen1floods11", str(REAL_ORIGINAL), "--out", str(out)])
    assert record["splits"]["train"]["patches"] == 4
    shared = sorted(REAL_DATA.glob("*/*/*.npy"))
    assert len(shared) == 22
    for path in shared:
        mine = out / "train" / path.parent.name / path.name
        reference, converted_ = np.load(path), np.load(mine)
        if path.parent.name == "lab":
            np.testing.assert_array_equal(label_to_target(converted_), label_to_target(reference))
        else:
            atol = 1e-5 if path.stem.endswith(("NDVI", "NDWI")) else 0
            np.testing.assert_allclose(converted_, reference, rtol=0, atol=atol, err_msg=str(path))
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["train"]["bands"]["VV"]["water_share"] == pytest.approx(0.267, abs=0.001)


def test_chips_whose_files_do_not_fit_are_counted(tmp_path):
    """A VH raster of another size and a three-band label: skipped with their reasons, the rest written."""
    source = tmp_path / "chips"
    rng = np.random.default_rng(3)
    for chip in ("good", "sized", "banded"):
        write_tif(source / f"{chip}_vv.tif", rng.normal(-15, 3, (SIZE, SIZE)).astype(np.float32))
        write_tif(source / f"{chip}_vh.tif", rng.normal(-22, 3, (SIZE, SIZE + (chip == "sized"))).astype(np.float32))
        write_tif(source / f"{chip}.tif", np.ones((3 if chip == "banded" else 1, SIZE, SIZE), np.uint8))
    record = main(["s1-chips", str(source), "--out", str(tmp_path / "out"), "--patch", str(PATCH), "--val-share", "0"])
    assert record["splits"]["(not split)"]["skipped"] == {"size mismatch": 1, "wrong band count": 1}
    assert record["splits"]["train"]["patches"] == 4
    assert any("sized_vh.tif: 8 x 9 pixels" in skip["message"] for skip in record["skipped"])
