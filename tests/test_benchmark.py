"""benchmark.py on a tiny configuration: a row for every registered model, a whole-scene row, sane numbers."""
from __future__ import annotations

import json

import torch

import benchmark
from lib.model import MODELS


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
