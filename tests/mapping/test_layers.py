"""The layers of an operational flood product (lib/mapping/layers.py, flags.py, calibration.py,
composite.py; issue 26 part 2): each layer against an independent computation, exclusion on every layer,
provenance tags, non-overlapping simplified polygons, a composite of two dates, --uncertainty refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lib.errors import ReportedError
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject
from rio_cogeo.cogeo import cog_validate

import composite
from conftest import RANGES, UTM
from lib.checkpoint import file_sha256
from lib.mapping.calibration import calibrate, fit_temperature, reliability
from lib.mapping.flags import EXCLUDED, LOW_CONTRAST, NO_DATA, STEEP_SLOPE, FlagsWriter
from lib.mapping.flood import BEFORE_WATER, COLORMAP, DRY, FLOOD, NODATA
from lib.mapping.rasters import ArrayReader, ArrayWriter, make_preprocess
from lib.mapping.vector import polygonize
from test_mapping import H, W, flood_case, run_predict, threshold_checkpoint, write_raster  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SLOPE_DEG = 10.0


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read(1), dataset.tags(), dataset.nodata


def on_scene_grid(path) -> np.ndarray:
    """A raster reprojected onto the flood case's UTM grid, nearest, by rasterio directly (NaN outside)."""
    with rasterio.open(path) as source:
        out = np.full((H, W), np.nan, np.float32)
        reproject(source.read(1).astype(np.float32), out, src_transform=source.transform, src_crs=source.crs,
                  src_nodata=source.nodata, dst_transform=UTM, dst_crs="EPSG:32630", dst_nodata=np.nan,
                  resampling=Resampling.nearest)
    return out


@pytest.fixture(scope="module")
def layers_run(threshold_checkpoint, flood_case, tmp_path_factory):
    """Every layer of the flood case, with a DEM (20 m grid) 10 degrees steep west of x = 442,000 m."""
    folder, expected = flood_case
    out = tmp_path_factory.mktemp("layers")
    dem_transform = Affine(20.0, 0.0, 440_000.0, 0.0, -20.0, 4_480_000.0)
    x = 440_000.0 + 20.0 * (np.arange(W // 2) + 0.5)
    dem = np.tile(np.where(x < 442_000, np.tan(np.radians(SLOPE_DEG)) * (442_000 - x), 0.0), (H // 2, 1))
    write_raster(out / "dem.tif", dem.astype(np.float32), dem_transform)
    names = ["water", "probability", "flood", "observed", "reference", "exclusion", "likelihood", "flags"]
    paths = {name: out / f"{name}.tif" for name in names}
    summary = run_predict(threshold_checkpoint, folder / "post.tif", paths["water"], "--pre", folder / "pre.tif",
                          "--reference-water", folder / "reference.tif", "--reference-threshold", 50,
                          "--exclude", folder / "exclude.tif", "--flood", paths["flood"],
                          "--probability", paths["probability"], "--observed-water", paths["observed"],
                          "--reference-out", paths["reference"], "--exclusion-out", paths["exclusion"],
                          "--likelihood", paths["likelihood"], "--temperature", 2.0, "--flags", paths["flags"],
                          "--dem", out / "dem.tif", "--footprint", out / "footprint.gpkg",
                          "--uncertainty", out / "std.tif", "--tta", "flip", "--summary", out / "summary.json")
    return folder, expected, out, paths, summary


def test_observed_water_reference_and_exclusion_layers(layers_run):
    folder, expected, out, paths, _ = layers_run
    reference = on_scene_grid(folder / "reference.tif") >= 50
    excluded = on_scene_grid(folder / "exclude.tif") != 0
    post_nan = np.zeros((H, W), bool)
    post_nan[0:3, 0:3] = True
    with rasterio.open(folder / "post.tif") as d:
        water_now = d.read(1) < -13.3
    with rasterio.open(folder / "pre.tif") as d:
        water_before = d.read(1) < -13.3
    observed = np.where(water_now | water_before | reference, 1, 0).astype(np.uint8)
    observed[excluded | post_nan] = NODATA
    assert np.array_equal(read(paths["observed"])[0], observed)
    reference_layer = reference.astype(np.uint8)
    reference_layer[excluded] = NODATA          # exclusion applies to every layer
    assert np.array_equal(read(paths["reference"])[0], reference_layer)
    assert np.array_equal(read(paths["exclusion"])[0], excluded.astype(np.uint8))
    mask, _, _ = read(paths["water"])
    assert (mask[excluded] == NODATA).all() and (mask[~excluded & ~post_nan] != NODATA).all()
    assert np.isnan(read(paths["probability"])[0][excluded]).all()
    assert np.isnan(read(out / "std.tif")[0][excluded]).all()
    assert np.array_equal(read(paths["flood"])[0], expected)


def test_exclusion_reaches_the_summary(layers_run):
    folder, expected, out, paths, summary = layers_run
    excluded = on_scene_grid(folder / "exclude.tif") != 0
    mask = read(paths["water"])[0]
    written = json.loads((out / "summary.json").read_text())
    water = written["water"]["classes"]["water"]["pixels"]
    assert water == int((mask == 1).sum()) and water == int(((expected == FLOOD) | (expected == BEFORE_WATER)).sum())
    assert written["water"]["nodata_pixels"] == int(excluded.sum()) + 9
    assert summary["water_fraction"] == pytest.approx(water / (H * W - int(excluded.sum()) - 9))


def test_likelihood_is_the_tempered_probability_in_percent(layers_run):
    _, _, _, paths, _ = layers_run
    probability = read(paths["probability"])[0].astype(np.float64)
    likelihood, tags, nodata = read(paths["likelihood"])
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    expected = np.rint(100.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / 2.0)))
    valid = np.isfinite(probability)
    assert nodata == NODATA and (likelihood[~valid] == NODATA).all()
    assert np.abs(likelihood[valid].astype(int) - expected[valid]).max() <= 1   # float32 probabilities
    assert likelihood[valid].max() <= 100 and tags["LIKELIHOOD_TEMPERATURE"] == "2.0"


def test_flags_bits(layers_run):
    folder, _, out, paths, _ = layers_run
    flags = read(paths["flags"])[0]
    excluded = on_scene_grid(folder / "exclude.tif") != 0
    assert (flags[0:3, 0:3] & NO_DATA).all() and not (flags[3:, :] & NO_DATA).any()
    assert np.array_equal((flags & EXCLUDED) != 0, excluded)
    assert not (flags & LOW_CONTRAST).any()     # 12 dB between water and land everywhere
    steep = (flags & STEEP_SLOPE) != 0
    assert steep[5:-5, 5:190].all() and not steep[5:-5, 210:].any()


def test_every_layer_is_a_tagged_cog(threshold_checkpoint, layers_run):
    _, _, out, paths, _ = layers_run
    digest = file_sha256(threshold_checkpoint)
    for name, path in paths.items():
        assert cog_validate(str(path), quiet=True)[0], name
        _, tags, _ = read(path)
        assert tags["CHECKPOINT_SHA256"] == digest and tags["THRESHOLD"] == "0.5", name
        assert "post.tif" in tags["INPUTS"] and tags["CREATED_UTC"] and tags["PRODUCT"], name
        assert ("CLASSES" in tags) != ("UNITS" in tags), name


def test_flood_quicklook_shows_the_classes(layers_run):
    from PIL import Image
    _, expected, _, paths, _ = layers_run
    image = np.asarray(Image.open(paths["flood"].with_suffix(".png")))
    palette = np.zeros((256, 4), np.uint8)
    for value, colour in COLORMAP.items():
        palette[value] = colour
    assert image.shape == (H, W, 4) and np.array_equal(image, palette[expected])


def test_footprint_is_the_valid_not_excluded_area(layers_run):
    import geopandas as gpd
    folder, _, out, _, summary = layers_run
    excluded = on_scene_grid(folder / "exclude.tif") != 0
    footprint = gpd.read_file(out / "footprint.gpkg")
    valid_m2 = (H * W - 9 - int(excluded.sum())) * 100.0
    assert len(footprint) == 1 and footprint.geometry.iloc[0].area == pytest.approx(valid_m2)
    assert summary["footprint"]["area_km2"] == pytest.approx(valid_m2 / 1e6)


def test_low_contrast_and_steep_slope_flags_against_a_direct_computation():
    rng = np.random.default_rng(0)
    db = rng.normal(-8.0, 0.5, (130, 200)).astype(np.float32)
    water = np.zeros(db.shape, bool)
    water[:, 10:30] = True
    db[:, 10:30] = -20.0                       # block 0: 12 dB contrast
    water[:, 70:90] = True
    db[:, 70:90] = -10.0                       # block 1: 2 dB contrast: flagged
    invalid = np.zeros(db.shape, bool)
    excluded = np.zeros(db.shape, bool)
    dem = np.tile(np.arange(200.0) * 10.0 * np.tan(np.radians(SLOPE_DEG)), (130, 1))
    dem[:, 100:] = 0.0
    out = np.zeros(db.shape, np.uint8)
    grid = {"crs": rasterio.crs.CRS.from_epsg(32630), "transform": UTM, "height": 130, "width": 200}
    flags = FlagsWriter(ArrayWriter(out), RANGES["VV"][1] - RANGES["VV"][0], grid, ArrayReader(dem.astype(np.float32)))
    image = make_preprocess("VV", RANGES)(db)[0]  # the model input the engine hands over
    for row0 in range(0, 130, 48):              # strips of another height than the blocks
        rows = slice(row0, row0 + 48)
        flags.add(row0, water[rows], invalid[rows], excluded[rows], image[rows])
    flags.close()
    expected_low = np.zeros(db.shape, bool)
    for r0 in range(0, 130, 64):
        for c0 in range(0, 200, 64):
            block = (slice(r0, r0 + 64), slice(c0, c0 + 64))
            w = water[block]
            if w.any() and (~w).any() and db[block][~w].mean() - db[block][w].mean() < 3.0:
                expected_low[block] = w
    assert expected_low[:, 70:90].all() and not expected_low[:, 10:30].any()
    assert np.array_equal((out & LOW_CONTRAST) != 0, expected_low)
    steep = (out & STEEP_SLOPE) != 0
    assert steep[:, 1:99].all() and not steep[:, 101:].any()


# ------------------------------------------------------------------------------ polygons, composite

def blobs(size: int = 160, seed: int = 3) -> np.ndarray:
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    smooth = ndimage.uniform_filter(rng.random((size, size)), 7)
    return np.select([smooth > 0.53, smooth < 0.47], [FLOOD, BEFORE_WATER], DRY).astype(np.uint8)


@pytest.mark.parametrize("crs, transform, tolerance_m", [
    ("EPSG:32630", UTM, 20.0), ("EPSG:4326", Affine(0.0002, 0.0, -3.0, 0.0, -0.0002, 39.5), 50.0)])
def test_simplified_polygons_never_overlap_and_keep_the_tolerance(crs, transform, tolerance_m):
    import geopandas as gpd
    import shapely
    classes = blobs()
    grid = {"crs": rasterio.crs.CRS.from_string(crs), "transform": transform, "height": 160, "width": 160}
    values = {FLOOD: "flood", BEFORE_WATER: "water"}
    probability = np.zeros_like(classes)
    exact, _ = polygonize(classes, probability, grid, values)
    simple, _ = polygonize(classes, probability, grid, values, simplify_m=tolerance_m)
    assert len(exact) == len(simple) > 20 and (classes == FLOOD).any()
    geometries = np.asarray(simple.geometry)
    assert shapely.coverage_is_valid(geometries) and shapely.is_valid(geometries).all()
    tree = shapely.STRtree(geometries)
    left, right = tree.query(geometries, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geometries[left[pairs]], geometries[right[pairs]]))
    assert overlap.max(initial=0.0) <= 1e-9 * shapely.area(geometries).mean()
    in_metres = [gpd.GeoSeries(f.geometry).to_crs("EPSG:32630") for f in (exact, simple)]
    moved = shapely.hausdorff_distance(np.asarray(in_metres[0]), np.asarray(in_metres[1]), densify=0.1)
    assert moved.max() <= tolerance_m * 1.001 and moved.max() > 5.0
    assert shapely.get_num_coordinates(geometries).sum() < shapely.get_num_coordinates(np.asarray(exact.geometry)).sum()


def test_composite_of_two_dates(tmp_path):
    first = np.full((60, 80), DRY, np.uint8)
    first[10:20, 10:20] = FLOOD
    first[40:50, 0:10] = BEFORE_WATER
    first[0:5, 70:80] = NODATA
    second = np.full((60, 80), DRY, np.uint8)
    second[10:20, 10:30] = FLOOD               # grows
    second[30:35, 30:35] = FLOOD               # new
    second[0:5, 75:80] = FLOOD                 # seen only on the second date
    second[0:5, 70:72] = NODATA                # never seen
    write_raster(tmp_path / "flood_20240105.tif", first, nodata=NODATA, dtype="uint8")
    write_raster(tmp_path / "b.tif", second, nodata=NODATA, dtype="uint8")
    report = composite.main([str(tmp_path / "max.tif"), str(tmp_path / "flood_20240105.tif"),
                             f"{tmp_path / 'b.tif'}@2024-01-17", "--first-date", str(tmp_path / "first.tif")])
    extent, tags, _ = read(tmp_path / "max.tif")
    expected = np.full((60, 80), DRY, np.uint8)
    expected[(first == FLOOD) | (second == FLOOD)] = FLOOD
    expected[40:50, 0:10] = BEFORE_WATER
    expected[0:5, 70:72] = NODATA
    assert np.array_equal(extent, expected) and tags["DATES"] == "20240105,20240117"
    dates = read(tmp_path / "first.tif")[0]
    expected_dates = np.where(first == FLOOD, 20240105, np.where(second == FLOOD, 20240117, 0))
    assert np.array_equal(dates, expected_dates)
    assert report["pixels"]["flood"] == int((expected == FLOOD).sum())
    for path in ("max.tif", "first.tif"):
        assert cog_validate(str(tmp_path / path), quiet=True)[0]
    with pytest.raises(ReportedError, match="PATH@YYYY-MM-DD"):  # lib.cli.run prints it as one error: line
        composite.main([str(tmp_path / "max2.tif"), str(tmp_path / "b.tif"), str(tmp_path / "b.tif")])


# ------------------------------------------------------------------------- uncertainty, calibration

def test_uncertainty_without_a_source_of_spread_is_refused(threshold_checkpoint, flood_case, tmp_path):
    folder, _ = flood_case
    with pytest.raises(SystemExit, match="no spread"):
        run_predict(threshold_checkpoint, folder / "post.tif", tmp_path / "water.tif",
                    "--uncertainty", tmp_path / "std.tif")
    assert not list(tmp_path.iterdir())


def test_a_layer_without_its_input_is_refused(threshold_checkpoint, flood_case, tmp_path):
    folder, _ = flood_case
    with pytest.raises(SystemExit, match="--reference-out needs --reference-water"):
        run_predict(threshold_checkpoint, folder / "post.tif", tmp_path / "water.tif",
                    "--reference-out", tmp_path / "ref.tif")
    assert not list(tmp_path.iterdir())


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_ece():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 4.0, 200_000)
    labels = rng.random(z.size) < 1.0 / (1.0 + np.exp(-z / 2.5))   # the truth is 2.5 times less sure
    overconfident = 1.0 / (1.0 + np.exp(-z))
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    before, after = reliability(overconfident, labels), reliability(calibrate(overconfident, temperature), labels)
    assert after["ece"] < 0.01 < before["ece"]


def test_reliability_bins_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    curve = reliability(p, y, bins=10)
    assert curve["pixels"][0] == 2 and curve["pixels"][9] == 2 and curve["pixels"][5] == 1
    assert curve["ece"] == pytest.approx((2 * 0.45 + 2 * 0.05 + 1 * 0.55) / 5)


def test_many_scenes_get_every_layer(threshold_checkpoint, flood_case, tmp_path):
    folder, _ = flood_case
    run_predict(threshold_checkpoint, folder / "post.tif", "--out-dir", tmp_path / "maps", "--flood", "flood.tif",
                "--observed-water", "observed.tif", "--likelihood", "likelihood.tif", "--flags", "flags.tif",
                "--footprint", "footprint.gpkg")
    names = {p.name for p in (tmp_path / "maps").iterdir()}
    assert {"post_observed.tif", "post_likelihood.tif", "post_flags.tif", "post_footprint.gpkg",
            "post_flood.png", "post_flood.tif"} <= names
    post = read(folder / "post.tif")[0]
    water_now = np.where(post < -13.3, 1, 0).astype(np.uint8)   # no --pre, no reference: water now
    water_now[np.isnan(post)] = NODATA
    assert np.array_equal(read(tmp_path / "maps" / "post_observed.tif")[0], water_now)


def test_block_rows_hands_on_whole_blocks_in_order_and_the_rest_at_the_end():
    from lib.mapping.rasters import BlockRows
    rows = BlockRows(4)
    a, b = np.arange(30).reshape(10, 3), np.arange(10)
    assert rows.add(0, a[:3], b[:3]) is None
    start, (got_a, got_b) = rows.add(3, a[3:9], b[3:9])
    assert start == 0 and np.array_equal(got_a, a[:8]) and np.array_equal(got_b, b[:8])
    with pytest.raises(RuntimeError, match="in order"):
        rows.add(5, a[5:6], b[5:6])
    rows.add(9, a[9:], b[9:])
    start, (got_a, got_b) = rows.take_all()
    assert start == 8 and np.array_equal(got_a, a[8:]) and np.array_equal(got_b, b[8:])
    assert rows.take_all() is None
