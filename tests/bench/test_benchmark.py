"""benchmark.py on a tiny configuration: a row for every registered model, a whole-scene row, sane numbers;
the worker protocol of lib/bench/measure.py and the synthetic benchmark scene."""
from __future__ import annotations

import json

import torch

import benchmark
from lib.models.factory import MODELS


def test_flop_counting_convention():
    """A multiply-add counts as 2 FLOPs: a 3x3 conv 1 -> 4 channels on 8x8 is 8*8*4*9 MACs."""
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert benchmark.count_flops(conv, 8, "cpu") == 2 * 8 * 8 * 4 * 9


def test_quick_benchmark_writes_a_row_for_every_model(tmp_path):
    threads = torch.get_num_threads()
    try:
        result = benchmark.main(["--quick", "--image-size", "32", "--batch-size", "2", "--scene-size", "80",
                                 "--scene-models", "UnetLight", "PSPMixer-kd", "--no-cuda",
                                 "--output", str(tmp_path / "benchmark.md"), "--json", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(threads)
    table = (tmp_path / "benchmark.md").read_text()
    labels = list(benchmark.configurations())
    assert set(MODELS) <= {name for name, _ in benchmark.configurations().values()}
    assert {"PSPMixer", "PSPMixer-kd"} <= set(labels)
    rows = {row["label"]: row for row in json.loads((tmp_path / "b.json").read_text())["models"]}
    for label in labels:
        assert f"| {label} |" in table
        row = rows[label]
        assert "error" not in row, row
        assert row["held"] >= row["used"] > 0 and row["gflops"] > 0
        assert row["cpu_latency_ms"] > 0 and row["cpu_throughput"] > 0 and row["cpu_peak_mib"] >= 0
    assert "Whole scene" in table and "FlopCounterMode" in table and "intra-op thread" in table
    scenes = {scene["label"]: scene for scene in result["scenes"]}
    assert set(scenes) == {"UnetLight", "PSPMixer-kd"}
    for scene in scenes.values():
        assert scene["megapixels_per_s"] > 0 and scene["peak_process_mib"] > 0 and scene["tiles"] >= 9


def test_scene_runs_in_a_fresh_process_and_a_failing_model_gets_an_error_row(capsys):
    """The worker protocol (python -m lib.bench.measure): a row per label, a failed worker's last stderr lines
    as its error, the scene written once for all of them."""
    from lib.bench.measure import measure_scenes
    configs = {"UnetLight": ("UnetLight", {}), "broken": ("NoSuchModel", {})}
    o = {"image_size": 32, "scene_size": 64, "scene_batch": 4, "threads": 1, "malloc": "default", "in_process": False}
    rows = {row["label"]: row for row in measure_scenes(list(configs), configs, o)}
    assert rows["UnetLight"]["tiles"] >= 9 and rows["UnetLight"]["megapixels_per_s"] > 0
    assert rows["UnetLight"]["scene"] == 64 and rows["UnetLight"]["device"] == "cpu"
    assert "unknown model 'NoSuchModel'" in rows["broken"]["error"]
    assert "scene broken: failed: " in capsys.readouterr().out


def test_benchmark_scene_is_tiled_float32_with_a_nodata_corner(tmp_path):
    import numpy as np
    import rasterio

    from lib.synthetic.scene import write_scene
    with rasterio.open(write_scene(tmp_path / "scene.tif", 300, seed=1)) as src:
        assert (src.dtypes[0], src.shape, src.crs.to_epsg()) == ("float32", (300, 300), 32630)
        assert src.block_shapes[0] == (256, 256)  # tiled: predict.py reads it by windows
        vv = src.read(1)
    assert np.isnan(vv[:15, :15]).all() and np.isfinite(vv[20:, :]).all()
    assert np.nanmin(vv) < -20 < -9 < np.nanmax(vv)  # dark water and brighter land, in dB
