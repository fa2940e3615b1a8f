"""The change test of --pre (lib/mapping/change.py) and the mapping methods (lib/mapping/methods.py) on
hand-made scenes where new water, removed water and no change are known."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

import predict
from conftest import RANGES, UTM, write_geotiff
from lib.checkpoint import FORMAT, save_checkpoint
from lib.errors import InferenceError
from lib.mapping.change import (AUTO_MAX_DB, CONFIDENT, WATER_NO_CHANGE, ChangeTest, build_change_test, fit_change_db,
                                parse_change_db)
from lib.mapping.flood import BEFORE_WATER, DRY, FLOOD, NODATA
from lib.mapping.methods import ThresholdModel, scene_threshold
from lib.mapping.rasters import ArrayReader
from lib.models.factory import build_model

WATER_DB, LAND_DB = -20.0, -8.0
H, W = 192, 256

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An MLP_256 of width 1 set by hand to a threshold (water below about -13 dB), with a recorded
    training-fitted threshold (the threshold method's fallback)."""
    model = build_model("MLP_256", {"widths": [1]}).eval()
    with torch.no_grad():
        conv, norm, _, head = model.layers
        conv.weight.fill_(-1.0)
        conv.bias.fill_(0.4)
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        head.weight.fill_(100.0)
        head.bias.fill_(-1.0)
    data = {"format": "bands", "train_bands": ["VV", "VH"], "val_bands": ["VV", "VH"], "normalization": RANGES,
            "image_size": 64}
    baseline = {"method": "threshold", "bands": {"VV": {"threshold": -16.0, "water_below": True}}}
    path = tmp_path_factory.mktemp("ckpt") / "threshold.pt"
    save_checkpoint({"format": FORMAT, "model": {"name": "MLP_256", "args": {"widths": [1]}},
                     "state_dict": model.state_dict(), "data": data, "metrics": {}, "epoch": 0, "parameters": {},
                     "constants": {}, "baseline": baseline}, path)
    return path


def run(checkpoint, *args):
    return predict.main([str(checkpoint), *map(str, args), "--no-progress", "--precision", "fp32", "--tile", "64"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Post- and pre-event dB scenes with speckle-like noise: new water (a decrease of 12 dB), removed
    water, unchanged water, and water now whose backscatter did not change (dark both times, but the
    pre-event scene is 2.5 dB brighter there, so that the model calls it land before: the red rim)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pair")
    post = np.full((H, W), LAND_DB, np.float32)
    pre = post.copy()
    post[20:80, 20:100] = WATER_DB                  # new water: 4,800 px
    pre[120:180, 20:100] = WATER_DB                 # removed water: dry now
    post[20:80, 150:230] = pre[20:80, 150:230] = WATER_DB      # unchanged water
    post[120:180, 150:230] = -14.5                  # water now (model, below -13.3 dB), ...
    pre[120:180, 150:230] = -12.0                   # ... land before, only 2.5 dB brighter: no significant change
    noise = rng.uniform(-0.3, 0.3, (H, W)).astype(np.float32)
    write_geotiff(folder / "post.tif", post + noise, crs="EPSG:32630", transform=UTM, nodata=np.nan)
    write_geotiff(folder / "pre.tif", pre + noise, crs="EPSG:32630", transform=UTM, nodata=np.nan)
    write_geotiff(folder / "same.tif", post + noise, crs="EPSG:32630", transform=UTM, nodata=np.nan)
    expected = np.full((H, W), DRY, np.uint8)
    expected[20:80, 20:100] = FLOOD
    expected[20:80, 150:230] = BEFORE_WATER
    expected[120:180, 150:230] = WATER_NO_CHANGE
    return folder, expected


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read(1)


@pytest.mark.parametrize("change_db", ["auto", "-3"])
def test_flood_needs_a_decrease_new_removed_and_unchanged_water_apart(checkpoint, pair, tmp_path, change_db):
    folder, expected = pair
    summary = run(checkpoint, folder / "post.tif", tmp_path / "water.tif", "--pre", folder / "pre.tif",
                  "--change-db", change_db, "--flood", tmp_path / "flood.tif", "--summary", tmp_path / "s.json")
    np.testing.assert_array_equal(read(tmp_path / "flood.tif"), expected)
    change = json.loads((tmp_path / "s.json").read_text())["change"]
    assert change["test"] == ("auto" if change_db == "auto" else "fixed")
    assert change["threshold_db"] <= AUTO_MAX_DB
    assert change["flood_pixels"] == 60 * 80
    assert change["unchanged_water_pixels"] == 60 * 80
    assert change["water_without_change_pixels"] == 60 * 80
    assert summary["flood"]["classes"]["water_no_change"]["value"] == WATER_NO_CHANGE


def test_change_off_maps_flood_as_before(checkpoint, pair, tmp_path):
    folder, expected = pair
    summary = run(checkpoint, folder / "post.tif", tmp_path / "water.tif", "--pre", folder / "pre.tif",
                  "--change-db", "off", "--flood", tmp_path / "flood.tif")
    np.testing.assert_array_equal(read(tmp_path / "flood.tif"), np.where(expected == WATER_NO_CHANGE, FLOOD, expected))
    assert summary["change"] == {"test": "off"}
    assert "water_no_change" not in summary["flood"]["classes"]


def test_nothing_changed_means_no_flood(checkpoint, pair, tmp_path):
    folder, _ = pair
    summary = run(checkpoint, folder / "post.tif", tmp_path / "water.tif", "--pre", folder / "same.tif",
                  "--flood", tmp_path / "flood.tif")
    flood = read(tmp_path / "flood.tif")
    assert (flood == FLOOD).sum() == 0 and (flood == NODATA).sum() == 0
    assert summary["change"]["flood_pixels"] == 0


@pytest.mark.parametrize("text", ["3", "0", "nan", "minus three", "+2"])
def test_bad_change_db_is_one_error_line(checkpoint, pair, tmp_path, text):
    folder, _ = pair
    with pytest.raises(SystemExit, match=r"^error: --change-db must be") as caught:
        run(checkpoint, folder / "post.tif", tmp_path / "water.tif", "--pre", folder / "pre.tif", "--change-db", text)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "water.tif").exists()


def test_change_db_values():
    assert parse_change_db("auto") == "auto" and parse_change_db("off") is None and parse_change_db("-3") == -3.0
    with pytest.raises(InferenceError):
        parse_change_db("+1")


def test_auto_threshold_follows_the_no_change_spread_and_caps_at_minus_3_db():
    rng = np.random.default_rng(1)
    pre = rng.normal(-10, 1, (200, 200)).astype(np.float32)
    noisy = pre + rng.normal(0.5, 2.0, pre.shape).astype(np.float32)   # offset 0.5 dB, spread 2 dB
    fit = fit_change_db([noisy], [pre])
    assert fit["median_db"] == pytest.approx(0.5, abs=0.05)
    assert fit["sigma_db"] == pytest.approx(2.0, rel=0.05)
    assert fit["threshold_db"] == pytest.approx(fit["median_db"] - 2.5 * fit["sigma_db"], abs=1e-6)
    assert fit_change_db([pre], [pre])["threshold_db"] == AUTO_MAX_DB   # identical dates: spread 0


@pytest.mark.parametrize("confident, expected", [(True, [FLOOD, WATER_NO_CHANGE, WATER_NO_CHANGE, FLOOD, NODATA]),
                                                 (False, [WATER_NO_CHANGE, WATER_NO_CHANGE, WATER_NO_CHANGE, FLOOD,
                                                          NODATA])])
def test_sure_land_to_sure_water_needs_only_the_least_decrease(confident, expected):
    """auto: a pixel both classifications are sure of (water now >= 0.95, before <= 0.05) is flood with a
    decrease below -3 dB, short of the scene's fitted threshold (-6 dB here); the others need the fit."""
    post = np.array([[-16.0, -16.0, -16.0, -18.0, -16.0]], np.float32)
    pre = np.array([[-11.5, -11.5, -13.5, -11.0, np.nan]], np.float32)   # ratios -4.5, -4.5, -2.5, -7, unknown
    p_post = np.array([[0.99, 0.80, 0.99, 0.60, 0.99]], np.float32)      # the second: not sure it is water now
    p_pre = np.array([[0.01, 0.01, 0.01, 0.40, np.nan]], np.float32)
    test = ChangeTest(ArrayReader(post), ArrayReader(pre), [lambda v: v], -6.0, confident=confident)
    classes = np.array([[FLOOD] * 4 + [NODATA]], np.uint8)
    np.testing.assert_array_equal(test.apply(0, classes, p_post, p_pre)[0], expected)


def test_only_auto_trusts_sure_classifications(tmp_path):
    samples = [np.full((40, 40), -10.0, np.float32)]
    auto, record = build_change_test("auto", None, None, samples, samples, "db", 0.0)
    fixed, fixed_record = build_change_test(-5.0, None, None, samples, samples, "db", 0.0)
    assert auto.confident and record["confident_probability"] == CONFIDENT
    assert not fixed.confident and "confident_probability" not in fixed_record


# ------------------------------------------------------------------------------------------ methods

def bimodal_scene(rng, water_share: float) -> np.ndarray:
    db = rng.normal(LAND_DB, 1.5, (256, 256)).astype(np.float32)
    rows = int(256 * water_share)
    db[:rows] = rng.normal(WATER_DB, 1.5, (rows, 256))
    return db


def test_scene_threshold_splits_a_bimodal_scene_and_rejects_a_unimodal_one():
    rng = np.random.default_rng(2)
    fit = scene_threshold(bimodal_scene(rng, 0.05))        # 5 % water: found on the edge tiles
    assert fit["bimodal"] and WATER_DB < fit["threshold_db"] < LAND_DB and fit["separability"] > 0.75
    assert not scene_threshold(rng.normal(LAND_DB, 1.5, (256, 256)).astype(np.float32))["bimodal"]


def test_threshold_model_is_a_logistic_at_the_threshold():
    model = ThresholdModel(-15.0, "VV", RANGES)
    lo, hi = RANGES["VV"]
    x = torch.tensor([(-17.0 - lo) / (hi - lo), (-15.0 - lo) / (hi - lo), (-13.0 - lo) / (hi - lo)])
    probability = torch.sigmoid(model(x)).numpy()
    np.testing.assert_allclose(probability, 1 / (1 + np.exp([-2.0, 0.0, 2.0])), atol=1e-5)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lake at -20 dB in land at -8 dB (speckled), and a scene of land only (no bimodality)."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("lake")
    db = rng.normal(LAND_DB, 1.0, (H, W)).astype(np.float32)
    db[40:120, 60:200] = rng.normal(WATER_DB, 1.0, (80, 140))
    write_geotiff(folder / "lake.tif", db, crs="EPSG:32630", transform=UTM, nodata=np.nan)
    write_geotiff(folder / "land.tif", rng.normal(LAND_DB, 1.0, (H, W)).astype(np.float32), crs="EPSG:32630",
                  transform=UTM, nodata=np.nan)
    return folder


@pytest.mark.parametrize("method", ["model", "threshold", "ensemble"])
def test_each_method_maps_the_lake_and_the_summary_says_which(checkpoint, lake, tmp_path, method):
    summary = run(checkpoint, lake / "lake.tif", tmp_path / "water.tif", "--method", method,
                  "--summary", tmp_path / "s.json")
    water = read(tmp_path / "water.tif")
    assert water[40:120, 60:200].mean() > 0.99 and water.sum() - water[40:120, 60:200].sum() < 20
    record = json.loads((tmp_path / "s.json").read_text())["method"]
    assert record["name"] == method == summary["method"]["name"]
    if method != "model":
        assert record["source"] == "scene" and WATER_DB < record["threshold_db"] < LAND_DB


def test_threshold_falls_back_to_the_checkpoint_without_bimodality(checkpoint, lake, tmp_path):
    summary = run(checkpoint, lake / "land.tif", tmp_path / "water.tif", "--method", "threshold")
    assert summary["method"]["source"] == "checkpoint" and summary["method"]["threshold_db"] == -16.0
    assert read(tmp_path / "water.tif").sum() == 0


@pytest.mark.parametrize("args, message", [(["--method", "otsu"], "--method must be one of"),
                                           (["--method", "threshold", "--band", "VV,VH", "--raster-band", "1,1"],
                                            "--method threshold maps one backscatter band")])
def test_bad_method_is_one_error_line(checkpoint, lake, tmp_path, args, message):
    with pytest.raises(SystemExit, match=f"^error: {message}"):
        run(checkpoint, lake / "lake.tif", tmp_path / "water.tif", *args)
    assert not (tmp_path / "water.tif").exists()


def test_post_event_scene_is_read_once_with_the_change_test_and_flags(checkpoint, pair, tmp_path, monkeypatch):
    """The change test and --flags take the rows the engine read: every post-event row is read by the
    engine's strips only (tile 64, overlap 16: strips from 0, 48, ..., 128), never again."""
    from lib.mapping import rasters
    from lib.mapping.tiling import tile_origins
    folder, expected = pair
    reads = []
    original = rasters.RasterReader.read

    def counting(self, row0, row1):
        reads.append((str(self.path), row0, row1))
        return original(self, row0, row1)
    monkeypatch.setattr(rasters.RasterReader, "read", counting)
    run(checkpoint, folder / "post.tif", tmp_path / "water.tif", "--pre", folder / "pre.tif", "--flood",
        tmp_path / "flood.tif", "--flags", tmp_path / "flags.tif", "--overlap", "16")
    post_reads = [(r0, r1) for path, r0, r1 in reads if path.endswith("post.tif")]
    assert post_reads == [(r0, min(r0 + 64, H)) for r0 in tile_origins(H, 64, 16)]
    assert np.array_equal(read(tmp_path / "flood.tif"), expected)
