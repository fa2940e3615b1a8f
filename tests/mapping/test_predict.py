"""predict.py and lib/mapping/tiling.py: georeferencing, no-data, seam-free blending, any scene size, .npy input."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

import predict
from conftest import RANGES, UTM, write_geotiff
from lib.data.bands import normalize
from lib.checkpoint import FORMAT, save_checkpoint
from lib.errors import InferenceError
from lib.mapping.rasters import ArrayReader, ArrayWriter, make_preprocess
from lib.mapping.sinks import MaskSink
from lib.mapping.tiling import blend_window, predict_tiled, tile_origins
from lib.models.factory import build_model

NODATA_VALUE = -9999.0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def write_checkpoint(path, name: str, args: dict, image_size: int = 64, seed: int = 0):
    """A checkpoint of a randomly initialized model (BatchNorm statistics made non-trivial)."""
    torch.manual_seed(seed)
    model = build_model(name, args)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    data = {"format": "bands", "train_bands": ["VV", "VH"], "val_bands": ["VV", "VH"], "normalization": RANGES,
            "image_size": image_size}
    save_checkpoint({"format": FORMAT, "model": {"name": name, "args": args}, "state_dict": model.state_dict(),
                     "data": data, "metrics": {}, "epoch": 0, "parameters": {}, "constants": {}}, path)
    return path, model.eval()


def full_pass(model, raw: np.ndarray) -> np.ndarray:
    """Water probability of one forward pass over the whole image (the reference a tiling must match)."""
    image, _ = normalize(np.where(raw == NODATA_VALUE, np.nan, raw), "VV", RANGES)
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(image)[None, None]))[0, 0].numpy()


def synthetic_db(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    raw = np.where(np.sin(x / 17.0) + np.cos(y / 11.0) > 0.6, -19.0, -8.0) + rng.normal(0, 2.5, (height, width))
    return raw.astype(np.float32)


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    """150 x 230 float32 VV dB GeoTIFF (not a multiple of the 64 px tile), EPSG:32630, 10 m pixels, with
    NaN pixels and pixels at the nodata value."""
    folder = tmp_path_factory.mktemp("scene")
    raw = synthetic_db(150, 230)
    raw[10:20, 30:45] = np.nan
    raw[100:103, 5:9] = NODATA_VALUE
    raw[149, 229] = np.inf
    path = write_geotiff(folder / "scene.tif", raw, crs="EPSG:32630", transform=UTM, nodata=NODATA_VALUE)
    return path, raw, UTM


def test_tile_origins_cover_every_pixel_and_stay_inside():
    for length in (1, 63, 64, 65, 150, 230, 1000):
        origins = tile_origins(length, 64, 16)
        covered = np.zeros(length, bool)
        for origin in origins:
            covered[origin:origin + 64] = True
            assert origin >= 0 and (origin + 64 <= length or length < 64)
        assert covered.all()
        assert all(b - a <= 48 for a, b in zip(origins, origins[1:]))  # overlap at least 16 px
    with pytest.raises(InferenceError):
        tile_origins(100, 64, 64)


def test_blend_window_sums_to_one_over_a_regular_overlap():
    window = blend_window(64, 16)
    assert window.min() > 0 and window.max() == 1.0
    ramp = window[32]
    assert np.allclose(ramp[48:] + ramp[:16], 1.0)  # two tiles 48 px apart
    assert np.allclose(blend_window(64, 0), 1.0)


def test_geotiff_prediction_keeps_georeference_nodata_and_matches_one_full_pass(geotiff, tmp_path):
    path, raw, transform = geotiff
    checkpoint, model = write_checkpoint(tmp_path / "mlp.pt", "MLP_256", {})
    out, probability = tmp_path / "mask.tif", tmp_path / "probability.tif"
    summary = predict.main([str(checkpoint), str(path), str(out), "--precision", "fp32", "--tile", "64", "--overlap", "16",
                            "--probability", str(probability), "--no-progress", "--batch-size", "5"])
    assert summary["tiles"] == len(tile_origins(150, 64, 16)) * len(tile_origins(230, 64, 16))
    with rasterio.open(out) as dataset:
        assert (dataset.height, dataset.width) == (150, 230)
        assert dataset.crs.to_epsg() == 32630
        assert dataset.transform == transform
        assert dataset.dtypes == ("uint8",) and dataset.nodata == 255
        mask = dataset.read(1)
    with rasterio.open(probability) as dataset:
        assert dataset.dtypes == ("float32",) and dataset.transform == transform
        tiled = dataset.read(1)
    nodata = ~np.isfinite(raw) | (raw == NODATA_VALUE)
    assert np.array_equal(mask == 255, nodata)
    assert set(np.unique(mask[~nodata])) <= {0, 1}
    assert np.isnan(tiled[nodata]).all()
    # MLP_256 is exactly translation-equivariant (1x1 convolutions): any error in tile placement,
    # padding, cropping or weight normalization would show here
    reference = full_pass(model, raw)
    assert np.abs(tiled[~nodata] - reference[~nodata]).max() < 1e-5
    assert np.array_equal(mask[~nodata], (reference[~nodata] >= 0.5).astype(np.uint8))
    quicklook = out.with_suffix(".png")
    from PIL import Image
    with Image.open(quicklook) as image:
        assert image.size == (230, 150)


def calibrated(model, raw: np.ndarray):
    """Scale the head so the logits spread over about +-3 with median 0: probabilities then cover the whole
    [0, 1] range (a random model's are all near one value, which would hide any seam)."""
    image = torch.from_numpy(normalize(raw, "VV", RANGES)[0])[None, None]
    with torch.no_grad():
        scale = 3.0 / model(image).std()
        model.head.weight.mul_(scale)
        model.head.bias.mul_(scale)
        model.head.bias.sub_(model(image).median())
    return model


def tiled_probability(model, raw: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    result = np.zeros(raw.shape, np.float32)
    sink = MaskSink(ArrayWriter(np.zeros(raw.shape, np.uint8)), ArrayWriter(result))
    predict_tiled(model, ArrayReader(raw), sink, make_preprocess("VV", RANGES), tile=tile, overlap=overlap,
                  progress=False)
    return result


def test_convolutional_model_has_no_seams(tmp_path):
    """UnetLight (3x3 convs, pooling) sees less context near tile borders, so tiles cut without overlap
    differ sharply from one full pass there (seams); blended overlapping tiles stay close to it everywhere."""
    raw = synthetic_db(150, 230)
    model = calibrated(write_checkpoint(tmp_path / "unetlight.pt", "UnetLight", {"width": 8})[1], raw)
    reference = full_pass(model, raw)
    assert reference.std() > 0.25
    cut = np.abs(tiled_probability(model, raw, 64, 0) - reference)
    blended = np.abs(tiled_probability(model, raw, 64, 16) - reference)
    assert blended.mean() < 0.01 and blended.max() < 0.15, (blended.mean(), blended.max())
    assert cut.max() > 3 * blended.max()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_npy_input_small_scene_and_linear_units(tmp_path):
    """A .npy scene smaller than one tile (reflect-padded), written without CRS; linear power input gives
    the same mask as the same data in dB."""
    checkpoint, model = write_checkpoint(tmp_path / "mlp.pt", "MLP_256", {})
    raw = synthetic_db(40, 50, seed=1)
    raw[0, 0] = np.nan
    np.save(tmp_path / "scene_db.npy", raw)
    np.save(tmp_path / "scene_linear.npy", (10.0 ** (raw / 10.0)).astype(np.float32))
    predict.main([str(checkpoint), str(tmp_path / "scene_db.npy"), str(tmp_path / "db.tif"), "--no-progress", "--precision", "fp32",
                  "--probability", str(tmp_path / "p.tif")])
    predict.main([str(checkpoint), str(tmp_path / "scene_linear.npy"), str(tmp_path / "linear.tif"), "--precision", "fp32", "--units",
                  "linear", "--no-progress", "--no-quicklook"])
    with rasterio.open(tmp_path / "db.tif") as a, rasterio.open(tmp_path / "linear.tif") as b, \
            rasterio.open(tmp_path / "p.tif") as p:
        assert a.crs is None and (a.height, a.width) == (40, 50)
        db, linear, probability = a.read(1), b.read(1), p.read(1)
    assert db[0, 0] == 255 and linear[0, 0] == 255
    assert (db != linear).mean() < 1e-3  # identical up to float rounding at the threshold
    reference = full_pass(model, raw)
    assert np.nanmax(np.abs(probability - reference)) < 1e-5


def test_strips_are_read_and_written_in_order_with_bounded_rows():
    """The engine never asks for more than one tile row of input and hands rows to the sink top to bottom."""
    class RecordingReader(ArrayReader):
        spans: list = []

        def read(self, row0, row1):
            self.spans.append((row0, row1))
            return super().read(row0, row1)

    class RecordingSink:
        def __init__(self):
            self.rows = []

        def write(self, row0, probability, invalid):
            self.rows.append((row0, len(probability)))

    model = torch.nn.Conv2d(1, 1, 1).eval()
    reader, sink = RecordingReader(synthetic_db(700, 90)), RecordingSink()
    predict_tiled(model, reader, sink, make_preprocess("VV", RANGES), tile=64, overlap=16, progress=False)
    assert max(row1 - row0 for row0, row1 in reader.spans) <= 64
    starts = [row0 for row0, _ in sink.rows]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(n for _, n in sink.rows) == 700
    assert all(a + n == b for (a, n), (b, _) in zip(sink.rows, sink.rows[1:]))


def test_fixed_size_model_needs_its_tile(tmp_path):
    model = build_model("PSPMixer", {"image_size": 64, "patch": 16, "hidden": 8, "depth": 1}).eval()
    reader, sink = ArrayReader(synthetic_db(100, 100)), MaskSink(ArrayWriter(np.zeros((100, 100), np.uint8)))
    with pytest.raises(InferenceError, match="64x64"):
        predict_tiled(model, reader, sink, make_preprocess("VV", RANGES), tile=32, overlap=8, progress=False)
    predict_tiled(model, reader, sink, make_preprocess("VV", RANGES), tile=64, overlap=16, progress=False)


def test_unknown_band_is_a_clear_error(tmp_path, geotiff):
    checkpoint, _ = write_checkpoint(tmp_path / "mlp.pt", "MLP_256", {})
    with pytest.raises(SystemExit, match="HH"):
        predict.main([str(checkpoint), str(geotiff[0]), str(tmp_path / "m.tif"), "--band", "HH", "--no-progress"])


# ------------------------------------------------------------- issue 13: predict.py never destroys data

GOOD_MASK = b"a good mask from an earlier run"


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("mlp") / "mlp.pt", "MLP_256", {})[0]


def run(checkpoint, *args):
    return predict.main([str(checkpoint), *map(str, args), "--no-progress", "--precision", "fp32"])


@pytest.mark.parametrize("bad, message", [
    (["--tile", "64", "--overlap", "64"], "overlap"),
    (["--batch-size", "0"], "--batch-size must be in"),
    (["--batch-size", "-1"], "--batch-size must be in"),
    (["--threshold", "1.5"], "--threshold must be in (0.0, 1.0)"),
    (["--threshold", "nan"], "--threshold must be a finite number"),
    (["--threshold", "0"], "--threshold must be in"),
    (["--min-area-m2", "-5"], "--min-area-m2"),
    (["--polygons", "x.shp"], ".gpkg"),
])
def test_an_existing_mask_survives_a_bad_option(mlp_checkpoint, geotiff, tmp_path, bad, message):
    out = tmp_path / "mask.tif"
    out.write_bytes(GOOD_MASK)
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        run(mlp_checkpoint, geotiff[0], out, *bad)
    assert out.read_bytes() == GOOD_MASK
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]


def test_a_tile_the_model_cannot_take_is_refused_before_any_output(geotiff, tmp_path):
    torch.manual_seed(0)
    args = {"image_size": 64, "patch": 16, "hidden": 8, "depth": 1}
    checkpoint = tmp_path / "mixer.pt"
    model = build_model("PSPMixer", args)
    save_checkpoint({"format": FORMAT, "model": {"name": "PSPMixer", "args": args}, "state_dict": model.state_dict(),
                     "data": {"format": "bands", "val_bands": ["VV"], "normalization": RANGES, "image_size": 64},
                     "metrics": {}, "epoch": 0, "parameters": {}, "constants": {}}, checkpoint)
    out = tmp_path / "mask.tif"
    out.write_bytes(GOOD_MASK)
    with pytest.raises(SystemExit, match="cannot run on 32x32 tiles"):
        run(checkpoint, geotiff[0], out, "--tile", "32", "--flood", tmp_path / "flood.tif")
    assert out.read_bytes() == GOOD_MASK and not (tmp_path / "flood.tif").exists()


@pytest.mark.parametrize("outputs", [
    lambda scene, tmp: [scene],                                          # OUTPUT is the input
    lambda scene, tmp: [tmp / "m.tif", "--probability", scene],
    lambda scene, tmp: [tmp / "m.tif", "--probability", tmp / "m.tif"],
    lambda scene, tmp: [tmp / "m.tif", "--quicklook", tmp / "m.tif"],
    lambda scene, tmp: [tmp / "m.tif", "--flood", tmp / "p.tif", "--probability", tmp / "p.tif"],
    lambda scene, tmp: [tmp / "m.tif", "--pre", tmp / "m.tif"],
])
def test_an_output_that_is_an_input_or_another_output_is_refused(mlp_checkpoint, geotiff, tmp_path, outputs):
    scene = tmp_path / "scene.tif"
    scene.write_bytes(geotiff[0].read_bytes())
    (tmp_path / "m.tif").write_bytes(GOOD_MASK)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SystemExit, match="(is the .* input|are one file)"):
        run(mlp_checkpoint, scene, *outputs(scene, tmp_path))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def write_single(path, array, dtype):
    """A scene on the UTM grid with no nodata tag, so only the values say what units they are in."""
    return write_geotiff(path, array, crs="EPSG:32630", transform=UTM, dtype=dtype)


def test_values_must_look_like_the_declared_units(mlp_checkpoint, tmp_path):
    db = synthetic_db(80, 90)
    cases = [
        (write_single(tmp_path / "u8.tif", np.clip(db + 40, 0, 255), "uint8"), [], "uint8 integers are not dB"),
        (write_single(tmp_path / "power.tif", 10 ** (db / 10), "float32"), [], "no negative value"),
        (write_single(tmp_path / "db.tif", db, "float32"), ["--units", "linear"], "negative values"),
        (write_single(tmp_path / "db2.tif", db, "float32"), ["--units", "amplitude"], "negative values"),
    ]
    for scene, extra, message in cases:
        with pytest.raises(SystemExit, match=message):
            run(mlp_checkpoint, scene, tmp_path / "m.tif", *extra)
        assert not (tmp_path / "m.tif").exists()
    run(mlp_checkpoint, tmp_path / "power.tif", tmp_path / "m.tif", "--units", "linear", "--no-quicklook")
    assert (tmp_path / "m.tif").is_file()


def test_warnings_say_which_band_is_read_and_when_most_input_becomes_nodata(mlp_checkpoint, tmp_path, capsys):
    db = synthetic_db(80, 90)
    three = write_single(tmp_path / "three.tif", np.stack([db, db - 5, db + 1]), "float32")
    run(mlp_checkpoint, three, tmp_path / "a.tif", "--no-quicklook")
    assert "has 3 bands; reading band 1 as VV" in capsys.readouterr().err
    power = 10 ** (db / 10)
    power[:60] = 0.0                     # 2/3 of the pixels: zero power has no logarithm
    run(mlp_checkpoint, write_single(tmp_path / "zeros.tif", power, "float32"), tmp_path / "b.tif", "--units",
        "linear", "--no-quicklook")
    err = capsys.readouterr().err
    assert "% of the valid input pixels become no-data with --units linear" in err
    with rasterio.open(tmp_path / "b.tif") as dataset:
        assert (dataset.read(1) == 255).mean() == pytest.approx(60 / 80)


def test_abbreviated_options_are_not_taken_for_others(mlp_checkpoint, geotiff, tmp_path):
    """`--pre` used to be taken as `--precision`; abbreviations are off in every command-line tool."""
    args = predict.parse_args(["c.pt", "scene.tif", "--pre", "before.tif", "mask.tif"])
    assert args.pre == "before.tif" and args.precision == "auto"
    assert args.paths == ["scene.tif", "mask.tif"]  # options between the paths, as before
    with pytest.raises(SystemExit) as stopped:
        predict.parse_args(["c.pt", "scene.tif", "mask.tif", "--prob", "p.tif"])
    assert stopped.value.code == 2


def test_every_command_line_tool_turns_abbreviations_off(monkeypatch):
    import argparse
    import sys
    import benchmark
    import evaluate
    import export_onnx
    import make_demo_data
    import make_kompsat5_demo
    import prepare_data
    seen = []

    def record(parser, *args, **kwargs):
        seen.append(parser.allow_abbrev)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_intermixed_args", record)
    monkeypatch.setattr(sys, "argv", ["tool"])
    for call in (lambda: predict.parse_args([]), lambda: evaluate.parse_args([]), lambda: benchmark.parse_args([]),
                 lambda: export_onnx.parse_args([]), make_demo_data.main, make_kompsat5_demo.main,
                 lambda: prepare_data.parse_args([])):
        with pytest.raises(SystemExit):
            call()
    assert seen == [False] * 7


def test_a_failed_run_leaves_no_final_named_file(mlp_checkpoint, geotiff, tmp_path, monkeypatch):
    """Outputs are written under temporary names: a run stopped half-way (here after the first strip)
    keeps an earlier mask at the final name as it was, and leaves no partial file behind."""
    import lib.mapping.products as products

    def stop_after_first_strip(model, reader, sink, *args, **kwargs):
        class Stopping:
            def write(self, row0, probability, invalid, **extra):
                sink.write(row0, probability, invalid, **extra)
                raise KeyboardInterrupt

        return predict_tiled(model, reader, Stopping(), *args, **kwargs)

    monkeypatch.setattr(products, "predict_tiled", stop_after_first_strip)
    out = tmp_path / "mask.tif"
    out.write_bytes(GOOD_MASK)
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C: one line and status 130 (tests/mapping/test_failmap.py)
        run(mlp_checkpoint, geotiff[0], out, "--probability", tmp_path / "p.tif", "--flood", tmp_path / "f.tif")
    assert stopped.value.code == 130
    assert out.read_bytes() == GOOD_MASK
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]


def test_sigterm_leaves_no_final_named_file(mlp_checkpoint, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    scene = write_single(tmp_path / "big.tif", synthetic_db(1000, 1000), "float32")
    out = tmp_path / "out" / "mask.tif"
    process = subprocess.Popen([sys.executable, "predict.py", str(mlp_checkpoint), str(scene), str(out),
                                "--no-progress", "--precision", "fp32", "--tta", "d4", "--batch-size", "1"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(".*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0 and "stopped by signal" in err, err[-2000:]
    assert not out.exists() and not list(out.parent.iterdir())
