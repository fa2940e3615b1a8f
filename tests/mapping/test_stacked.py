"""predict.py with a checkpoint trained with INPUT_BANDS (VV and VH stacked as input channels): one pass of
the model over both bands, however they are given; --band checked against the checkpoint; one band for the
threshold, ensemble and flags; --pre; --uncertainty; an exported .onnx."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

import predict
from conftest import RANGES, UTM, write_geotiff
from lib.checkpoint import FORMAT, save_checkpoint
from lib.data.bands import normalize
from lib.models.factory import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

BASELINE = {"method": "threshold", "bands": {"VV": {"threshold": -15.0, "water_below": True},
                                             "VH": {"threshold": -22.0, "water_below": True}}}


def write_stacked(path, name: str, args: dict, image_size: int = 64):
    """A checkpoint of a random model of VV+VH input channels, with training-fitted thresholds."""
    torch.manual_seed(0)
    model = build_model(name, {**args, "in_channels": 2})
    data = {"format": "bands", "train_bands": ["VV", "VH"], "val_bands": ["VV", "VH"], "normalization": RANGES,
            "image_size": image_size, "input_bands": ["VV", "VH"]}
    save_checkpoint({"format": FORMAT, "model": {"name": name, "args": {**args, "in_channels": 2}},
                     "state_dict": model.state_dict(), "data": data, "metrics": {}, "epoch": 0, "parameters": {},
                     "constants": {}, "baseline": BASELINE}, path)
    return path, model.eval()


def scene_db(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(VV, VH) in dB inside the normalization range: dark water in blobs, VH ~4 dB below VV, different
    speckle, and no-data in each band at other places."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    water = np.sin(x / 13.0) + np.cos(y / 9.0) > 0.5
    vv = np.where(water, -16.0, -6.0) + rng.normal(0, 1.0, water.shape)
    vh = np.where(water, -19.0, -11.0) + rng.normal(0, 1.0, water.shape)
    vv[5:9, 10:20], vh[30:33, 40:60] = np.nan, np.nan
    return vv.astype(np.float32), vh.astype(np.float32)


@pytest.fixture(scope="module")
def stacked_mlp(tmp_path_factory):
    return write_stacked(tmp_path_factory.mktemp("stacked") / "vvvh.pt", "MLP_256", {})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """One two-band GeoTIFF (VV, VH), the same bands as two one-band files, and the arrays."""
    folder = tmp_path_factory.mktemp("scene")
    vv, vh = scene_db(90, 150, seed=1)
    both = write_geotiff(folder / "s1.tif", np.stack([vv, vh]), crs="EPSG:32630", transform=UTM)
    one_vv = write_geotiff(folder / "vv.tif", vv, crs="EPSG:32630", transform=UTM)
    one_vh = write_geotiff(folder / "vh.tif", vh, crs="EPSG:32630", transform=UTM)
    return {"both": both, "vv": one_vv, "vh": one_vh, "arrays": (vv, vh), "folder": folder}


def run(checkpoint, *args):
    return predict.main([str(checkpoint), *map(str, args), "--no-progress", "--precision", "fp32",
                         "--no-quicklook"])


def read(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def stacked_input(vv: np.ndarray, vh: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """[1, 2, H, W] normalized as in training, and where either band is no-data."""
    (a, bad_a), (b, bad_b) = normalize(vv, "VV", RANGES), normalize(vh, "VH", RANGES)
    return torch.from_numpy(np.stack([a, b]))[None], bad_a | bad_b


def test_two_band_file_and_one_file_per_band_give_one_pass_of_the_stacked_model(stacked_mlp, scene, tmp_path):
    checkpoint, model = stacked_mlp
    given = {"two-band": ([scene["both"]], ["--band", "VV,VH", "--raster-band", "1,2"]),
             "default bands": ([scene["both"]], []),
             "files, other order": ([scene["vh"], scene["vv"]], ["--band", "VH,VV"])}
    probabilities = {}
    for name, (inputs, args) in given.items():
        out = tmp_path / f"{name.replace(' ', '_').replace(',', '')}.tif"
        summary = run(checkpoint, *inputs, out, *args, "--probability", out.with_suffix(".p.tif"),
                      "--tile", "32", "--overlap", "8")
        assert summary["stacked"] and summary["band"] == "VV,VH" and summary["fuse"] is None
        probabilities[name] = (read(out), read(out.with_suffix(".p.tif")))
    first_mask, first_probability = probabilities["two-band"]
    for mask, probability in probabilities.values():
        assert np.array_equal(mask, first_mask)
        np.testing.assert_array_equal(np.isnan(probability), np.isnan(first_probability))
        assert np.nanmax(np.abs(probability - first_probability)) == 0.0
    # MLP_256 is 1x1 convolutions: the tiled, blended map equals one pass over the whole stacked scene
    x, invalid = stacked_input(*scene["arrays"])
    with torch.no_grad():
        reference = torch.sigmoid(model(x))[0, 0].numpy()
    assert np.array_equal(first_mask == 255, invalid)   # no-data where either band is
    assert np.abs(first_probability[~invalid] - reference[~invalid]).max() < 1e-5


def test_a_convolutional_stacked_model_on_one_tile_is_its_forward_pass(tmp_path):
    checkpoint, model = write_stacked(tmp_path / "unet.pt", "UnetLight", {"width": 4})
    vv, vh = (np.nan_to_num(band, nan=-12.0) for band in scene_db(64, 64, seed=2))
    path = write_geotiff(tmp_path / "tile.tif", np.stack([vv, vh]), crs="EPSG:32630", transform=UTM)
    out = tmp_path / "mask.tif"
    run(checkpoint, path, out, "--probability", tmp_path / "p.tif", "--tile", "64", "--batch-size", "3")
    with torch.no_grad():
        reference = torch.sigmoid(model(stacked_input(vv, vh)[0]))[0, 0].numpy()
    assert np.abs(read(tmp_path / "p.tif") - reference).max() < 1e-5


@pytest.mark.parametrize("band, message", [
    ("VV", "INPUT_BANDS=VV\\+VH.*--band must name exactly VV,VH"),
    ("VV,VV", "--band must name exactly VV,VH"),
])
def test_bands_other_than_the_checkpoints_are_refused_in_one_line(stacked_mlp, scene, tmp_path, band, message):
    with pytest.raises(SystemExit, match=f"^error: .*{message}"):
        run(stacked_mlp[0], scene["both"], tmp_path / "mask.tif", "--band", band, "--raster-band",
            ",".join(str(i + 1) for i in range(len(band.split(",")))))
    assert not (tmp_path / "mask.tif").exists()


def test_threshold_and_ensemble_use_one_band_vh_unless_told(stacked_mlp, scene, tmp_path):
    checkpoint, _ = stacked_mlp
    vv, vh = scene["arrays"]
    for band, chosen in ((None, "VH"), ("VV", "VV")):
        extra = ["--threshold-band", band] if band else []
        out = tmp_path / f"threshold_{chosen}.tif"
        summary = run(checkpoint, scene["both"], out, "--method", "threshold", *extra)
        level = summary["method"]["threshold_db"]
        assert summary["method"]["band"] == chosen and summary["water_fraction"] > 0.1
        mask, db = read(out), {"VV": vv, "VH": vh}[chosen]
        valid = mask != 255
        assert np.array_equal(mask[valid] == 1, db[valid] < level)
        ensemble = run(checkpoint, scene["both"], tmp_path / f"ensemble_{chosen}.tif", "--method", "ensemble", *extra)
        assert ensemble["method"]["band"] == chosen and ensemble["method"]["threshold_db"] == level
    with pytest.raises(SystemExit, match="^error: --threshold-band HH is not one of the input bands"):
        run(checkpoint, scene["both"], tmp_path / "x.tif", "--method", "threshold", "--threshold-band", "HH")


def test_pre_event_flags_and_uncertainty_work_on_the_stack(stacked_mlp, scene, tmp_path):
    checkpoint, _ = stacked_mlp
    vv, vh = scene["arrays"]
    dry = np.where(np.isfinite(vv), -6.0, np.nan).astype(np.float32), np.full_like(vh, -11.0)
    pre_vv = write_geotiff(tmp_path / "pre_vv.tif", dry[0], crs="EPSG:32630", transform=UTM)
    pre_vh = write_geotiff(tmp_path / "pre_vh.tif", dry[1], crs="EPSG:32630", transform=UTM)
    with pytest.raises(SystemExit, match="^error: .*--uncertainty .*stacked.*add --tta"):   # no band spread
        run(checkpoint, scene["vh"], scene["vv"], tmp_path / "m.tif", "--band", "VH,VV", "--uncertainty",
            tmp_path / "u.tif")
    # the model on the same scene before and after: its water is all pre-event water, no flood
    same = run(checkpoint, scene["vh"], scene["vv"], tmp_path / "same.tif", "--band", "VH,VV", "--pre",
               f"{scene['vh']},{scene['vv']}", "--flood", tmp_path / "same_flood.tif", "--tta", "flip",
               "--uncertainty", tmp_path / "u.tif", "--flags", tmp_path / "flags.tif")
    water = read(tmp_path / "same.tif") == 1
    assert water.any() and (read(tmp_path / "same_flood.tif")[water] == 2).all()
    assert same["change"]["test"] == "auto"
    assert np.isfinite(read(tmp_path / "u.tif")[read(tmp_path / "same.tif") != 255]).all()
    flags = read(tmp_path / "flags.tif")
    assert set(np.unique(flags)) <= {0, 1, 2} and (flags[read(tmp_path / "same.tif") == 255] & 1).all()
    # the threshold (VH) on a dry pre-event scene given as one file per band, in the other order: all flood
    summary = run(checkpoint, scene["vh"], scene["vv"], tmp_path / "mask.tif", "--band", "VH,VV", "--method",
                  "threshold", "--pre", f"{pre_vh},{pre_vv}", "--flood", tmp_path / "flood.tif",
                  "--summary", tmp_path / "s.json")
    water = read(tmp_path / "mask.tif") == 1
    assert water.any() and (read(tmp_path / "flood.tif")[water] == 1).all()
    assert summary["change"]["flood_pixels"] == int(water.sum())
    assert json.loads((tmp_path / "s.json").read_text())["pre_event"] == [str(pre_vv), str(pre_vh)]  # reordered


def test_an_exported_stacked_model_maps_like_its_checkpoint(stacked_mlp, scene, tmp_path):
    import export_onnx
    checkpoint, _ = stacked_mlp
    onnx_path = tmp_path / "vvvh.onnx"
    assert export_onnx.main([str(checkpoint), str(onnx_path)])["max_abs_diff"] < 1e-4
    run(checkpoint, scene["both"], tmp_path / "pt.tif", "--probability", tmp_path / "pt_p.tif")
    run(onnx_path, scene["both"], tmp_path / "onnx.tif", "--probability", tmp_path / "onnx_p.tif")
    assert np.nanmax(np.abs(read(tmp_path / "pt_p.tif") - read(tmp_path / "onnx_p.tif"))) < 1e-4


def test_many_scenes_map_with_a_stacked_model(stacked_mlp, scene, tmp_path):
    checkpoint, _ = stacked_mlp
    result = run(checkpoint, scene["both"], "--out-dir", tmp_path / "maps")
    assert [row["status"] for row in result["scenes"]] == ["ok"]
    mask = read(next((tmp_path / "maps").glob("*_water.tif")))
    run(checkpoint, scene["both"], tmp_path / "one.tif")
    assert np.array_equal(mask, read(tmp_path / "one.tif"))
