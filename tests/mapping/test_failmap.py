"""predict.py fails safe (issue 25, whole-scene mapping): units checked against every band's range, rasters
combined only by georeference, multi-page TIFFs read as bands, complex rasters refused, --resume-batch keeps
only scenes mapped with the settings asked for, a folder or a truncated GeoTIFF named, Ctrl-C one line, a
killed batch's scratch files removed. The error lines never depend on a file name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

import predict
from conftest import UTM, write_geotiff
from lib.checkpoint import FORMAT, save_checkpoint
from lib.data.bands import NORMALIZATIONS
from lib.models.factory import build_model
from test_predict import mlp_checkpoint, run, synthetic_db, write_single  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SAR = {band: list(NORMALIZATIONS["sar"][band]) for band in ("VV", "VH", "HH")}


@pytest.fixture(scope="module")
def sar_checkpoint(tmp_path_factory):
    """An MLP checkpoint with today's default ranges (VV -30..5 dB: above 0, where the old check missed
    linear power read as dB) and KOMPSAT-5's HH."""
    path = tmp_path_factory.mktemp("sar") / "best.pt"
    model = build_model("MLP_256", {})
    data = {"format": "bands", "train_bands": ["VV", "VH"], "val_bands": ["VV", "VH"], "normalization": SAR,
            "image_size": 64}
    save_checkpoint({"format": FORMAT, "model": {"name": "MLP_256", "args": {}}, "state_dict": model.state_dict(),
                     "data": data, "metrics": {}, "epoch": 0, "parameters": {}, "constants": {}}, path)
    return path


def expect_error(match, *args):
    with pytest.raises(SystemExit, match=match) as stopped:
        run(*args)
    assert str(stopped.value.code).startswith("error: ") and "\n" not in str(stopped.value.code)
    return str(stopped.value.code)


# ---------------------------------------------------------------------------------------------- units

@pytest.mark.parametrize("band, values, extra, message", [
    ("VV", lambda db: 10 ** (db / 10), [], "no negative value"),                   # linear power as dB: VV too
    ("VH", lambda db: 10 ** ((db - 7) / 10), [], "no negative value"),
    ("HH", lambda db: 10 ** (db / 10), [], "far from where HH in dB lies in 20 .. 75"),   # linear power as dB
    ("HH", lambda db: 10 ** ((db + 60) / 20), [], "far from where HH in dB lies"),       # amplitude DN as dB
    ("VV", lambda db: np.where(db > -14, db + 25, db), [], "a median at or above 0"),    # some negative, most not
    ("VV", lambda db: 10 ** (db / 10) * 1e9, ["--units", "linear"], "far from where VV in dB lies"),  # scaled DN
])
def test_units_are_checked_against_every_bands_range(sar_checkpoint, tmp_path, band, values, extra, message):
    scene = write_single(tmp_path / "scene.tif", values(synthetic_db(80, 90)), "float32")
    line = expect_error(message, sar_checkpoint, scene, tmp_path / "m.tif", "--band", band, *extra)
    assert f"as {band}" in line
    assert not (tmp_path / "m.tif").exists()


def test_a_median_just_outside_the_bands_range_is_a_warning(sar_checkpoint, tmp_path, capsys):
    scene = write_single(tmp_path / "dark.tif", synthetic_db(80, 90) - 22, "float32")  # median about -36 dB
    run(sar_checkpoint, scene, tmp_path / "m.tif", "--band", "VV", "--no-quicklook")
    assert "outside the range where VV in dB lies in -30 .. 5" in capsys.readouterr().err
    power = write_single(tmp_path / "power.tif", 10 ** (synthetic_db(80, 90) / 10), "float32")
    run(sar_checkpoint, power, tmp_path / "p.tif", "--band", "VV", "--units", "linear", "--no-quicklook")
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- grids

def shifted(dx: float = 0.0, dy: float = 0.0) -> Affine:
    return Affine(UTM.a, 0.0, UTM.c + dx, 0.0, UTM.e, UTM.f + dy)


@pytest.mark.parametrize("crs, transform, message", [
    ("EPSG:32630", shifted(dx=1280.0), "apart"),                                # VV and VH 1.28 km apart
    ("EPSG:32631", UTM, "must share one CRS"),
    (None, Affine.identity(), "must share one CRS"),                         # one file without georeference
])
def test_band_files_on_other_grids_are_never_fused_by_position(mlp_checkpoint, tmp_path, crs, transform, message):
    db = synthetic_db(80, 90)
    vv = write_single(tmp_path / "a.tif", db, "float32")
    vh = write_geotiff(tmp_path / "b.tif", db - 7, crs=crs, transform=transform)
    expect_error(message, mlp_checkpoint, vv, vh, tmp_path / "m.tif", "--band", "VV,VH")
    assert not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("option", ["--pre", "--reference-water", "--exclude"])
def test_a_layer_without_crs_is_refused_not_paired_by_position(mlp_checkpoint, tmp_path, option):
    scene = write_single(tmp_path / "post.tif", synthetic_db(80, 90), "float32")
    layer = write_geotiff(tmp_path / "layer.tif", synthetic_db(80, 90, seed=1), crs=None, transform=Affine.identity())
    line = expect_error("cannot be placed on the scene", mlp_checkpoint, scene, tmp_path / "m.tif", option, layer,
                        "--flood", tmp_path / "f.tif")
    assert str(layer) in line and not (tmp_path / "f.tif").exists()


def test_layers_far_away_partial_or_empty_are_warned_about(mlp_checkpoint, tmp_path, capsys):
    db = synthetic_db(80, 90)
    scene = write_single(tmp_path / "post.tif", db, "float32")
    far = write_geotiff(tmp_path / "far.tif", db, crs="EPSG:32630", transform=shifted(dx=400_000.0))
    quarter = write_geotiff(tmp_path / "quarter.tif", np.ones((40, 45), np.uint8), crs="EPSG:32630",
                            transform=shifted(dx=450.0, dy=-400.0))
    empty = write_geotiff(tmp_path / "empty.tif", np.zeros((80, 90), np.uint8), crs="EPSG:32630", transform=UTM,
                          nodata=0)
    summary = run(mlp_checkpoint, scene, tmp_path / "m.tif", "--pre", far, "--reference-water", quarter,
                  "--exclude", empty, "--flood", tmp_path / "f.tif", "--no-quicklook")
    err = capsys.readouterr().err
    assert f"{far}: the pre-event raster does not overlap the scene" in err
    assert f"{quarter}: the reference water raster covers only 25% of the scene" in err
    assert f"{empty}: the exclusion raster has no valid value on the scene" in err
    assert summary["flood"] is not None and (tmp_path / "f.tif").is_file()


def test_a_layer_in_another_crs_is_reprojected_without_a_word(mlp_checkpoint, tmp_path, capsys):
    scene = write_single(tmp_path / "post.tif", synthetic_db(80, 90), "float32")
    with rasterio.open(scene) as dataset:  # the scene's extent in degrees, with a margin
        from rasterio.warp import transform_bounds
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    step = 0.0005
    geographic = Affine(step, 0, west - 10 * step, 0, -step, north + 10 * step)
    size = (int((north - south) / step) + 20, int((east - west) / step) + 20)
    reference = write_geotiff(tmp_path / "jrc.tif", np.full(size, 80, np.uint8), crs="EPSG:4326",
                              transform=geographic)
    run(mlp_checkpoint, scene, tmp_path / "m.tif", "--reference-water", reference, "--flood", tmp_path / "f.tif",
        "--no-quicklook")
    assert "reference water" not in capsys.readouterr().err
    with rasterio.open(tmp_path / "f.tif") as flood, rasterio.open(tmp_path / "m.tif") as mask:
        classes, water = flood.read(1), mask.read(1) == 1
    assert (classes == 1).sum() == 0 and (classes == 2).sum() == water.sum()  # the reference covers every pixel


# ---------------------------------------------------------------------------------- pages, complex, files

def test_a_multi_page_tiff_is_read_as_bands(mlp_checkpoint, tmp_path):
    from PIL import Image
    db = synthetic_db(80, 90)
    pages = [Image.fromarray(page) for page in (db, db - 7)]  # one page per band, as tifffile writes
    pages[0].save(tmp_path / "paged.tif", save_all=True, append_images=pages[1:])
    np.save(tmp_path / "stacked.npy", np.stack([db, db - 7]))
    paged = run(mlp_checkpoint, tmp_path / "paged.tif", tmp_path / "a.tif", "--band", "VV,VH", "--no-quicklook")
    stacked = run(mlp_checkpoint, tmp_path / "stacked.npy", tmp_path / "b.tif", "--band", "VV,VH", "--no-quicklook")
    assert paged["inputs"][0]["bands_in_file"] == 2 and paged["inputs"][0]["bands_read"] == [1, 2]
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert paged["water_fraction"] == stacked["water_fraction"]


def test_a_multi_page_pre_event_scene_says_only_its_first_page_is_read(mlp_checkpoint, tmp_path):
    from PIL import Image
    db = synthetic_db(40, 50)
    pages = [Image.fromarray(page) for page in (db, db - 7)]
    pages[0].save(tmp_path / "pre.tif", save_all=True, append_images=pages[1:])
    np.save(tmp_path / "post.npy", np.stack([db, db - 7]))
    expect_error("multi-page TIFF of 2 pages", mlp_checkpoint, tmp_path / "post.npy", tmp_path / "m.tif",
                 "--band", "VV,VH", "--pre", tmp_path / "pre.tif")


@pytest.mark.parametrize("kind", ["tif", "npy"])
def test_a_complex_raster_is_refused(mlp_checkpoint, tmp_path, kind):
    slc = (synthetic_db(40, 50) + 1j).astype(np.complex64)
    scene = tmp_path / f"slc.{kind}"
    if kind == "tif":
        write_single(scene, slc, "complex64")
    else:
        np.save(scene, slc)
    expect_error("complex values \\(complex64\\)", mlp_checkpoint, scene, tmp_path / "m.tif")


def test_a_complex_layer_is_refused(mlp_checkpoint, tmp_path):
    scene = write_single(tmp_path / "post.tif", synthetic_db(40, 50), "float32")
    pre = write_single(tmp_path / "pre.tif", (synthetic_db(40, 50) + 1j).astype(np.complex64), "complex64")
    expect_error(f"{pre}: complex values", mlp_checkpoint, scene, tmp_path / "m.tif", "--pre", pre)


@pytest.mark.parametrize("option", [None, "--pre", "--reference-water", "--exclude"])
def test_a_folder_where_a_raster_is_expected_is_named(mlp_checkpoint, tmp_path, option):
    folder = tmp_path / "scenes"
    folder.mkdir()
    scene = write_single(tmp_path / "post.tif", synthetic_db(40, 50), "float32")
    args = [folder, tmp_path / "m.tif"] if option is None else [scene, tmp_path / "m.tif", option, folder]
    expect_error(f"{folder}: .* is a folder; give the raster file itself", mlp_checkpoint, *args)


def test_a_truncated_geotiff_is_one_line_naming_the_file(mlp_checkpoint, tmp_path):
    scene = tmp_path / "cut.tif"
    with rasterio.open(scene, "w", driver="GTiff", height=512, width=512, count=1, dtype="float32", crs="EPSG:32630",
                       transform=UTM, tiled=True, blockxsize=256, blockysize=256) as dataset:
        dataset.write(synthetic_db(512, 512)[None])
    with open(scene, "r+b") as handle:  # the header and the first tiles stay, the last ones are cut short
        handle.truncate(scene.stat().st_size - 300_000)
    out = tmp_path / "m.tif"
    line = expect_error(str(scene), mlp_checkpoint, scene, out, "--no-quicklook")
    assert "See previous exception" not in line and ("truncated or damaged" in line or "cannot open" in line)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cut.tif"]


# ---------------------------------------------------------------------------------------------- Ctrl-C

@pytest.mark.parametrize("batch", [False, True])
def test_ctrl_c_is_one_line_and_status_130(mlp_checkpoint, tmp_path, monkeypatch, capsys, batch):
    import lib.mapping.products as products

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(products, "predict_tiled", interrupted)
    scene = write_single(tmp_path / "post.tif", synthetic_db(40, 50), "float32")
    args = [scene, "--out-dir", tmp_path / "maps"] if batch else [scene, tmp_path / "m.tif"]
    with pytest.raises(SystemExit) as stopped:
        run(mlp_checkpoint, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 130 and err[-1].startswith("interrupted: ") and "Traceback" not in "\n".join(err)
    assert ("--resume-batch" in err[-1]) == batch
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["post.tif"]


# ---------------------------------------------------------------------------------------- --resume-batch

@pytest.fixture()
def mapped_batch(mlp_checkpoint, tmp_path):
    scene = write_single(tmp_path / "scenes" / "s1.tif", synthetic_db(40, 50), "float32")
    run(mlp_checkpoint, scene, "--out-dir", tmp_path / "maps", "--threshold", "0.5", "--no-quicklook")
    return scene, tmp_path / "maps"


@pytest.mark.parametrize("change, message", [
    (["--threshold", "0.9"], "threshold 0.5, now 0.9"),
    (["--tta", "flip"], "tta none, now flip"),
    (["--band", "VH"], "band VV, now VH"),
    (["--units", "linear"], "units db, now linear"),
])
def test_resume_batch_refuses_scenes_mapped_with_other_settings(mlp_checkpoint, mapped_batch, change, message):
    scene, maps = mapped_batch
    before = {p.name: p.stat().st_mtime_ns for p in maps.iterdir()}
    line = expect_error(message.replace(".", r"\."), mlp_checkpoint, scene, "--out-dir", maps, "--resume-batch",
                        "--threshold", "0.5", "--no-quicklook", *change)
    assert str(scene) in line and {p.name: p.stat().st_mtime_ns for p in maps.iterdir()} == before


def test_resume_batch_refuses_another_checkpoint_and_keeps_the_same_settings(mapped_batch, tmp_path):
    from test_predict import write_checkpoint
    scene, maps = mapped_batch
    other = write_checkpoint(tmp_path / "other.pt", "MLP_256", {}, seed=1)[0]
    expect_error("checkpoint_sha256", other, scene, "--out-dir", maps, "--resume-batch", "--no-quicklook")


def test_resume_batch_skips_same_settings_and_redoes_an_unreadable_summary(mlp_checkpoint, mapped_batch, capsys):
    scene, maps = mapped_batch
    rows = run(mlp_checkpoint, scene, "--out-dir", maps, "--resume-batch", "--threshold", "0.5", "--no-quicklook")
    assert [r["status"] for r in rows["scenes"]] == ["skipped (complete)"]
    (maps / "s1_summary.json").write_text("{not json")
    rows = run(mlp_checkpoint, scene, "--out-dir", maps, "--resume-batch", "--no-quicklook")
    assert [r["status"] for r in rows["scenes"]] == ["ok"] and "cannot be read" in capsys.readouterr().err
    assert json.loads((maps / "s1_summary.json").read_text())["threshold"] == 0.5


def test_a_batch_killed_with_sigkill_leaves_scratch_that_resume_removes(mlp_checkpoint, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    scene = write_single(tmp_path / "scenes" / "big.tif", synthetic_db(1000, 1000), "float32")
    maps = tmp_path / "maps"
    process = subprocess.Popen([sys.executable, "predict.py", str(mlp_checkpoint), str(scene), "--out-dir", str(maps),
                                "--no-progress", "--precision", "fp32", "--tta", "d4", "--batch-size", "1",
                                "--no-quicklook"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(maps.glob(".*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    left = sorted(p.name for p in maps.glob(".*"))
    assert left, "the killed batch left no scratch file to clean"
    live = maps / f".other_water.partial-{os.getpid()}.tif"   # a live process's file (another rank) stays
    live.write_bytes(b"in use")
    rows = run(mlp_checkpoint, scene, "--out-dir", maps, "--resume-batch", "--tile", "256")
    assert [r["status"] for r in rows["scenes"]] == ["ok"]
    assert sorted(p.name for p in maps.glob(".*")) == [live.name]
