"""Flood products (lib/mapping, predict.py): flood classes against a pre-event scene and a reference on
another grid, exclusion, polygon areas in UTM and EPSG:4326, holes, minimum area, COG validity, many
scenes with a broken one, resume, TTA, band fusion, uncertainty."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import Geod, Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Polygon

import predict
from conftest import RANGES, UTM, write_geotiff
from lib.data.bands import normalize
from lib.checkpoint import FORMAT, save_checkpoint
from lib.mapping.rasters import ArrayReader, ArrayWriter, make_preprocess
from lib.mapping.sinks import MaskSink
from lib.mapping.tiling import predict_tiled
from lib.mapping.flood import BEFORE_WATER, DRY, FLOOD, NODATA, ClassTally
from lib.mapping.vector import PROBABILITY_SCALE, polygonize
from lib.models.factory import build_model

WATER_DB, LAND_DB = -20.0, -8.0
H, W = 300, 400

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def save(path, model, name: str, args: dict, image_size: int = 64):
    data = {"format": "bands", "train_bands": ["VV", "VH"], "val_bands": ["VV", "VH"], "normalization": RANGES,
            "image_size": image_size}
    save_checkpoint({"format": FORMAT, "model": {"name": name, "args": args}, "state_dict": model.state_dict(),
                     "data": data, "metrics": {}, "epoch": 0, "parameters": {}, "constants": {}}, path)
    return path


@pytest.fixture(scope="module")
def threshold_checkpoint(tmp_path_factory):
    """An MLP_256 of width 1 set by hand to a threshold: water (probability ~1) below -13.3 dB, land
    (~0.27) above, so every class of a synthetic scene is known exactly."""
    model = build_model("MLP_256", {"widths": [1]}).eval()
    with torch.no_grad():
        conv, norm, _, head = model.layers
        conv.weight.fill_(-1.0)
        conv.bias.fill_(0.4)                       # relu(0.4 - x): > 0 only for dark (normalized < 0.4) pixels
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        head.weight.fill_(100.0)
        head.bias.fill_(-1.0)
    return save(tmp_path_factory.mktemp("ckpt") / "threshold.pt", model, "MLP_256", {"widths": [1]})


def write_raster(path, bands, transform=UTM, crs="EPSG:32630", nodata=np.nan, dtype="float32"):
    """A dB scene (one band or a list of bands) on the UTM grid, NaN as nodata, unless told otherwise."""
    return write_geotiff(path, bands, crs=crs, transform=transform, dtype=dtype, nodata=nodata)


def scene_db(water: np.ndarray) -> np.ndarray:
    return np.where(water, WATER_DB, LAND_DB).astype(np.float32)


@pytest.fixture(scope="module")
def flood_case(tmp_path_factory):
    """Post- and pre-event scenes (UTM, same grid), a reference water raster on a coarser, shifted grid in
    another CRS-agnostic layout (20 m pixels), and an exclusion raster; with the expected classes."""
    folder = tmp_path_factory.mktemp("flood")
    post, pre, reference, exclude = (np.zeros((H, W), bool) for _ in range(4))
    post[50:150, 50:150] = True          # flooded: 1 km2
    post[200:250, 200:300] = True        # permanent: water in the reference
    reference[200:250, 200:300] = True
    post[0:40, 300:400] = True           # water before (pre-event) and now
    pre[0:40, 300:400] = True
    pre[260:300, 300:400] = True         # water before, dry now: dry
    post[260:300, 0:100] = True          # water now, but excluded (radar shadow, say)
    exclude[250:300, 0:100] = True
    post_db = scene_db(post)
    post_db[0:3, 0:3] = np.nan
    write_raster(folder / "post.tif", post_db)
    write_raster(folder / "pre.tif", scene_db(pre))
    # the reference on its own grid: 20 m pixels, origin 200 m west and 100 m north of the scene's
    ref_transform = Affine(20.0, 0.0, 439_800.0, 0.0, -20.0, 4_480_100.0)
    ref = np.zeros((H // 2 + 10, W // 2 + 20), np.uint8)
    ref[5 + 100:5 + 125, 10 + 100:10 + 150] = 80          # occurrence 80 %
    ref[5 + 10:5 + 20, 10 + 10:10 + 20] = 20              # rarely water: below --reference-threshold 50
    write_raster(folder / "reference.tif", ref, ref_transform, nodata=255, dtype="uint8")
    write_raster(folder / "exclude.tif", exclude.astype(np.uint8), nodata=None, dtype="uint8")
    expected = np.full((H, W), DRY, np.uint8)
    expected[post] = FLOOD
    expected[200:250, 200:300] = BEFORE_WATER
    expected[0:40, 300:400] = BEFORE_WATER
    expected[250:300, 0:100] = NODATA
    expected[0:3, 0:3] = NODATA
    return folder, expected


def run_predict(checkpoint, *args):
    return predict.main([str(checkpoint), *map(str, args), "--no-progress", "--precision", "fp32", "--tile", "64"])


def test_flood_classes_against_pre_event_and_reference_on_another_grid(threshold_checkpoint, flood_case, tmp_path):
    folder, expected = flood_case
    out = tmp_path / "out"
    summary = run_predict(threshold_checkpoint, folder / "post.tif", out / "water.tif", "--pre", folder / "pre.tif",
                          "--reference-water", folder / "reference.tif", "--reference-threshold", 50,
                          "--exclude", folder / "exclude.tif", "--flood", out / "flood.tif",
                          "--polygons", out / "flood.gpkg", "--summary", out / "summary.json")
    with rasterio.open(out / "flood.tif") as dataset:
        classes = dataset.read(1)
        assert dataset.colormap(1)[FLOOD][:3] == (220, 30, 30)
        assert dataset.crs.to_epsg() == 32630 and dataset.transform == UTM
    assert np.array_equal(classes, expected)
    written = json.loads((out / "summary.json").read_text())
    assert written["flood"]["classes"]["flood"]["area_km2"] == pytest.approx(1.0)
    assert written["flood"]["classes"]["flood"]["pixels"] == 10_000
    assert written["flood"]["classes"]["permanent_or_pre_event_water"]["pixels"] == 5_000 + 4_000
    assert written["flood"]["nodata_pixels"] == int((expected == NODATA).sum())
    assert written["model"]["checkpoint_sha256"] and written["threshold"] == 0.5
    assert written["inputs"][0]["crs"] == "EPSG:32630" and written["inputs"][0]["width"] == W
    assert {"inference_s", "pre_event_s", "polygons_s", "total_s"} <= set(written["timings"])
    assert summary["polygons"]["polygons"] == 3  # the flood square, the permanent lake, the pre-event lake
    import geopandas as gpd
    polygons = gpd.read_file(out / "flood.gpkg")
    flood = polygons[polygons["class"] == FLOOD]
    assert len(flood) == 1 and flood.area_m2.iloc[0] == pytest.approx(1e6)
    assert flood.mean_probability.iloc[0] > 0.99
    assert not list(out.glob(".*")), "no temporary or scratch file left behind"


def test_every_geotiff_is_a_valid_cog(threshold_checkpoint, tmp_path):
    water = np.zeros((600, 700), bool)
    water[100:300, 200:500] = True
    scene = write_raster(tmp_path / "scene.tif", scene_db(water))
    out = tmp_path / "out"
    run_predict(threshold_checkpoint, scene, out / "water.tif", "--probability", out / "p.tif", "--flood",
                out / "flood.tif", "--uncertainty", out / "std.tif", "--tta", "flip")
    for name in ("water.tif", "p.tif", "flood.tif", "std.tif"):
        valid, errors, _ = cog_validate(str(out / name))
        assert valid, (name, errors)
        with rasterio.open(out / name) as dataset:
            assert dataset.block_shapes[0] == (256, 256) and dataset.compression.value == "DEFLATE"
            assert dataset.overviews(1), name   # 700 px wide: overviews
    with rasterio.open(out / "water.tif") as dataset:
        assert np.array_equal(dataset.read(1), water.astype(np.uint8))


def square_classes(size_px: int, margin: int) -> np.ndarray:
    classes = np.zeros((size_px + 2 * margin, size_px + 2 * margin), np.uint8)
    classes[margin:margin + size_px, margin:margin + size_px] = FLOOD
    return classes


def test_square_of_one_km2_in_utm(tmp_path):
    classes = square_classes(100, 20)                 # 100 x 100 pixels of 10 m
    grid = {"crs": rasterio.crs.CRS.from_epsg(32630), "transform": UTM, "height": 140, "width": 140}
    frame, dropped = polygonize(classes, np.full(classes.shape, PROBABILITY_SCALE, np.uint8), grid, {FLOOD: "f"})
    assert len(frame) == 1 and dropped == 0
    assert frame.area_m2.iloc[0] == pytest.approx(1e6, rel=0.005)
    assert frame.mean_probability.iloc[0] == pytest.approx(1.0)


def test_square_of_one_km2_in_epsg4326(tmp_path):
    """A 1 km2 square drawn in UTM, reprojected to EPSG:4326 and rasterized on a 1e-5 degree grid: its
    polygon's geodesic area and the class area from pixel counts are both 1 km2 within 0.5%."""
    from rasterio.features import rasterize
    to_wgs84 = Transformer.from_crs(32630, 4326, always_xy=True)
    x0, y0 = 440_000.0, 4_480_000.0
    corners = [to_wgs84.transform(x, y) for x, y in ((x0, y0), (x0 + 1000, y0), (x0 + 1000, y0 + 1000),
                                                     (x0, y0 + 1000))]
    square = Polygon(corners)
    assert abs(Geod(ellps="WGS84").geometry_area_perimeter(square)[0]) == pytest.approx(1e6, rel=1e-3)
    lon0, lat0, lon1, lat1 = square.bounds
    step = 1e-5
    transform = Affine(step, 0.0, lon0 - 20 * step, 0.0, -step, lat1 + 20 * step)
    shape = (int((lat1 - lat0) / step) + 40, int((lon1 - lon0) / step) + 40)
    classes = rasterize([(square, FLOOD)], out_shape=shape, transform=transform, dtype="uint8")
    grid = {"crs": rasterio.crs.CRS.from_epsg(4326), "transform": transform, "height": shape[0], "width": shape[1]}
    frame, _ = polygonize(classes, np.zeros(shape, np.uint8), grid, {FLOOD: "f"})
    assert len(frame) == 1
    assert frame.area_m2.iloc[0] == pytest.approx(1e6, rel=0.005)
    tally = ClassTally(grid, {DRY: "dry", FLOOD: "flood"})
    tally.add(0, classes)
    assert tally.report()["classes"]["flood"]["area_km2"] == pytest.approx(1.0, rel=0.005)


def test_holes_are_kept_and_small_regions_dropped():
    classes = square_classes(100, 20)
    classes[50:70, 50:60] = DRY                      # a 20 x 10 px island: a hole of 20,000 m2
    classes[2:4, 2:4] = FLOOD                        # 400 m2: below the minimum area
    classes[5:15, 125:135] = FLOOD                   # 10,000 m2: kept
    grid = {"crs": rasterio.crs.CRS.from_epsg(32630), "transform": UTM, "height": 140, "width": 140}
    probability = np.full(classes.shape, PROBABILITY_SCALE // 2, np.uint8)
    frame, dropped = polygonize(classes, probability, grid, {FLOOD: "f"}, min_area_m2=5_000)
    assert dropped == 1 and len(frame) == 2
    big = frame.loc[frame.area_m2.idxmax()]
    assert len(big.geometry.interiors) == 1
    assert big.area_m2 == pytest.approx(1e6 - 20_000)
    assert sorted(frame.area_m2) == pytest.approx([10_000, 980_000])
    assert frame.mean_probability.iloc[0] == pytest.approx(0.5, abs=0.01)
    everything, dropped = polygonize(classes, probability, grid, {FLOOD: "f"}, min_area_m2=0)
    assert len(everything) == 3 and dropped == 0


def test_geojson_polygons_in_wgs84_and_simplified(threshold_checkpoint, tmp_path):
    water = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[0:200, 0:200]
    water[(yy - 100) ** 2 + (xx - 100) ** 2 < 60 ** 2] = True     # a disc: a stair-step outline to simplify
    scene = write_raster(tmp_path / "scene.tif", scene_db(water))
    import geopandas as gpd
    run_predict(threshold_checkpoint, scene, tmp_path / "a.tif", "--polygons", tmp_path / "raw.geojson")
    run_predict(threshold_checkpoint, scene, tmp_path / "b.tif", "--polygons", tmp_path / "simple.geojson",
                "--simplify-m", 15)
    raw, simple = gpd.read_file(tmp_path / "raw.geojson"), gpd.read_file(tmp_path / "simple.geojson")
    assert raw.crs.to_epsg() == 4326 and len(raw) == 1
    assert raw.area_m2.iloc[0] == pytest.approx(water.sum() * 100.0)
    assert len(simple.geometry.iloc[0].exterior.coords) < len(raw.geometry.iloc[0].exterior.coords) / 3


def test_batch_with_a_broken_scene_and_resume(threshold_checkpoint, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for index in range(3):
        water = np.zeros((100, 120), bool)
        water[10 * index:10 * index + 30, 20:60] = True
        write_raster(scenes / f"scene_{index}.tif", scene_db(water))
    (scenes / "scene_9.tif").write_bytes(b"not a GeoTIFF")
    out = tmp_path / "maps"
    with pytest.raises(SystemExit, match="1 of 4 scenes failed"):
        run_predict(threshold_checkpoint, str(scenes / "*.tif"), "--out-dir", out, "--flood", "flood.tif",
                    "--no-quicklook")
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    assert "scene_9.tif" in rows[3]["scene"] and "cannot open the raster" in rows[3]["error"]
    assert float(rows[0]["water_km2"]) == pytest.approx(0.12)
    for index in range(3):
        assert (out / f"scene_{index}_water.tif").is_file() and (out / f"scene_{index}_flood.tif").is_file()
        assert (out / f"scene_{index}_summary.json").is_file()
    assert not (out / "scene_9_water.tif").exists()
    # a restart skips the complete scenes and retries the failed one
    (out / "scene_1_flood.tif").unlink()   # scene 1 incomplete
    (scenes / "scene_9.tif").unlink()
    written = (out / "scene_0_water.tif").stat().st_mtime_ns
    summary = run_predict(threshold_checkpoint, str(scenes / "*.tif"), "--out-dir", out, "--flood", "flood.tif",
                          "--no-quicklook", "--resume-batch")
    statuses = [r["status"] for r in summary["scenes"]]
    assert statuses == ["skipped (complete)", "ok", "skipped (complete)"]
    assert (out / "scene_0_water.tif").stat().st_mtime_ns == written
    assert (out / "scene_1_flood.tif").is_file()


def test_scenes_are_shared_among_ranks(threshold_checkpoint, tmp_path):
    """Rank r maps scenes r, r + world, ...; the merged rows cover every scene once (gathered as
    torch.distributed.all_gather_object would), and only rank 0 writes summary.csv."""
    from lib.checkpoint import load_model
    from lib.mapping.batch import map_batch
    from lib.mapping.scene import SceneOptions, SceneOutputs
    scenes = []
    for index in range(5):
        water = np.zeros((64, 64), bool)
        water[:, :10 * (index + 1)] = True
        scenes.append(write_raster(tmp_path / f"s{index}.tif", scene_db(water)))
    model, checkpoint = load_model(threshold_checkpoint)
    template = SceneOutputs(mask=tmp_path / "water.tif")
    options = SceneOptions(progress=False, tile=64)
    parts = [map_batch(model, checkpoint["data"], scenes, tmp_path / "out", template, options, rank=r,
                       world_size=2) if r else None for r in (1,)]
    assert not (tmp_path / "out" / "summary.csv").exists()        # rank 1 does not write it
    assert sorted(row["scene"] for row in parts[0]) == [str(scenes[1]), str(scenes[3])]
    rows = map_batch(model, checkpoint["data"], scenes, tmp_path / "out", template, options, rank=0, world_size=2,
                     gather=lambda mine: mine + parts[0])
    assert [row["scene"] for row in rows] == [str(s) for s in scenes]
    assert len(list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))) == 5


def random_mlp():
    torch.manual_seed(0)
    model = build_model("MLP_256", {}).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
    return model


def probabilities(model, raw, tta="none", fuse="mean", uncertainty=False):
    raw = np.asarray(raw, np.float32)
    shape = raw.shape[-2:]
    result, std = np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    class Sink(MaskSink):
        def write(self, row0, probability, invalid, uncertainty=None):
            super().write(row0, probability, invalid)
            if uncertainty is not None:
                std[row0:row0 + len(uncertainty)] = uncertainty

    sink = Sink(ArrayWriter(np.zeros(shape, np.uint8)), ArrayWriter(result))
    bands = [1] if raw.ndim == 2 else list(range(1, len(raw) + 1))
    reader = ArrayReader(raw, band=bands if raw.ndim == 3 else 1)
    preprocess = [make_preprocess("VV", RANGES) for _ in bands] if raw.ndim == 3 else make_preprocess("VV", RANGES)
    predict_tiled(model, reader, sink, preprocess, tile=64, overlap=16, progress=False, tta=tta, fuse=fuse,
                  uncertainty=uncertainty)
    return result, std


def speckled(height=150, width=170, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    water = np.sin(x / 13.0) + np.cos(y / 9.0) > 0.5
    return (np.where(water, -18.0, -7.0) + rng.normal(0, 3.0, (height, width))).astype(np.float32)


def test_tta_of_an_equivariant_model_equals_no_tta():
    """MLP_256 (1x1 convolutions) commutes with flips and rotations: d4 and flip TTA give its plain
    probabilities and zero spread; a convolutional model's views differ, so TTA changes its output."""
    raw = speckled()
    plain, _ = probabilities(random_mlp(), raw)
    for tta in ("flip", "d4"):
        averaged, std = probabilities(random_mlp(), raw, tta=tta, uncertainty=True)
        assert np.abs(averaged - plain).max() < 1e-5, tta
        assert std.max() < 1e-4
    torch.manual_seed(0)
    unet = build_model("UnetLight", {"width": 4}).eval()
    no_tta, _ = probabilities(unet, raw)
    d4, std = probabilities(unet, raw, tta="d4", uncertainty=True)
    assert np.abs(d4 - no_tta).max() > 1e-4 and std.max() > 1e-5


def test_dual_band_fusion_with_a_blank_band():
    """VH with no data at all: the fused map is VV's alone, with no no-data from the blank band; two valid
    bands fuse to their mean (or max), with their spread as the uncertainty."""
    vv, vh = speckled(seed=1), speckled(seed=2)
    model = random_mlp()
    vv_alone, _ = probabilities(model, vv)
    vh_alone, _ = probabilities(model, vh)
    blank = np.full_like(vv, np.nan)
    fused, std = probabilities(model, np.stack([vv, blank]), uncertainty=True)
    assert np.abs(fused - vv_alone).max() < 1e-6 and np.isfinite(fused).all()
    assert std.max() < 1e-6
    mean, std = probabilities(model, np.stack([vv, vh]), uncertainty=True)
    assert np.abs(mean - (vv_alone + vh_alone) / 2).max() < 1e-5
    assert np.abs(std - np.abs(vv_alone - vh_alone) / 2).max() < 1e-4
    maximum, _ = probabilities(model, np.stack([vv, vh]), fuse="max")
    assert np.abs(maximum - np.maximum(vv_alone, vh_alone)).max() < 1e-5


def test_two_band_files_and_raster_bands_agree(threshold_checkpoint, tmp_path):
    """--band VV,VH with --raster-band 1,2 of one file and with two single-band files give one result."""
    water = np.zeros((100, 100), bool)
    water[20:60, 30:80] = True
    vv, vh = scene_db(water), scene_db(water)
    vh[:, :50] = np.nan                              # VH covers half the scene
    write_raster(tmp_path / "both.tif", [vv, vh])
    write_raster(tmp_path / "vv.tif", vv)
    write_raster(tmp_path / "vh.tif", vh)
    run_predict(threshold_checkpoint, tmp_path / "both.tif", tmp_path / "a.tif", "--band", "VV,VH",
                "--raster-band", "1,2", "--probability", tmp_path / "pa.tif")
    run_predict(threshold_checkpoint, tmp_path / "vv.tif", tmp_path / "vh.tif", tmp_path / "b.tif", "--band", "VV,VH",
                "--probability", tmp_path / "pb.tif")
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
        assert np.array_equal(a.read(1), water.astype(np.uint8))


def test_normalize_reference_used_by_threshold_model():
    """The hand-set threshold sits between the synthetic water and land values."""
    image, _ = normalize(np.array([WATER_DB, LAND_DB], np.float32), "VV", RANGES)
    assert image[0] < 0.4 < image[1]


def test_a_bad_option_stops_a_batch_before_any_scene(threshold_checkpoint, flood_case, tmp_path):
    folder, _ = flood_case
    with pytest.raises(SystemExit, match="--threshold must be in"):
        run_predict(threshold_checkpoint, folder / "post.tif", "--out-dir", tmp_path / "maps", "--threshold", "2")
    assert not (tmp_path / "maps").exists()
    with pytest.raises(SystemExit, match="--resume-batch needs --out-dir"):
        run_predict(threshold_checkpoint, folder / "post.tif", tmp_path / "m.tif", "--resume-batch")


def test_torchrun_shares_the_scenes_and_rank_0_writes_the_summary(threshold_checkpoint, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    for index in range(3):
        water = np.zeros((64, 64), bool)
        water[:, :10 * (index + 1)] = True
        write_raster(tmp_path / f"s{index}.tif", scene_db(water))
    out = tmp_path / "maps"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "predict.py",
               str(threshold_checkpoint), str(tmp_path / "s*.tif"), "--out-dir", str(out), "--no-progress",
               "--no-quicklook", "--device", "cpu", "--tile", "64"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("3 scenes: 3 mapped") == 1          # only rank 0 reports
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [Path(r["scene"]).name for r in rows] == ["s0.tif", "s1.tif", "s2.tif"]
    assert [float(r["water_fraction"]) for r in rows] == pytest.approx([10 / 64, 20 / 64, 30 / 64])
