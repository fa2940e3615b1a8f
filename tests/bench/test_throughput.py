"""benchmark.py --throughput (lib/bench/throughput.py): whole-scene mapping without bf16 as a section of the
benchmark page, measured on a tiny pair, the rest of the page kept."""
from __future__ import annotations

import json

import pytest
import torch

import benchmark
from lib.bench.throughput import HEADING, RUNS, section_of, with_section
from lib.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_throughput_section_from_a_tiny_measurement_keeps_the_page(tmp_path):
    page = tmp_path / "benchmark.md"
    page.write_text("# Benchmark\n\nmodels table\n\n## Whole scene: 80 x 80 px\n\nscene table\n")
    threads = torch.get_num_threads()
    try:
        result = benchmark.main(["--throughput", "--quick", "--models", "UnetLight", "--throughput-size", "96",
                                 "--output", str(page), "--overwrite", "--json", str(tmp_path / "t.json")])
    finally:
        torch.set_num_threads(threads)
    text = page.read_text()
    assert text.startswith("# Benchmark\n\nmodels table\n\n## Whole scene: 80 x 80 px\n\nscene table\n\n" + HEADING)
    rows = result["throughput"]["rows"]
    labels = {row["label"] for row in rows}
    assert labels == {"UnetLight", "UnetLight, --tile 512 --overlap 32 --batch-size 4", "UnetLight ONNX float",
                      "UnetLight ONNX int8", "threshold (--method threshold)"}
    assert {row["run"] for row in rows} == set(RUNS) and len(rows) == 2 * len(labels)
    for row in rows:
        assert "error" not in row, row
        assert row["end_to_end_mpx_s"] > 0 and row["pass_mpx_s"] >= row["end_to_end_mpx_s"] > 0
        assert row["cpu_s_per_mpx"] > 0 and row["inference"] > 0
        assert (row["pre_event_s"] > 0) == (row["run"] != "plain")
        assert f"| {row['label']} | {row['run']} |" in text
    assert "--precision fp32" in text and "native bf16" in text
    assert json.loads((tmp_path / "t.json").read_text())["throughput"]["size"] == 96


def test_a_new_measurement_replaces_the_section_and_the_full_page_keeps_it():
    page = "# Benchmark\n\nintro\n\n" + HEADING + "\n\nold rows\n\n## Later\n\nlater text\n"
    replaced = with_section(page, HEADING + "\n\nnew rows\n")
    assert replaced == "# Benchmark\n\nintro\n\n" + HEADING + "\n\nnew rows\n\n## Later\n\nlater text\n"
    assert section_of(replaced) == HEADING + "\n\nnew rows\n"
    assert with_section("# Page\n", HEADING + "\n") == "# Page\n\n" + HEADING + "\n"
    assert section_of("# Page\n\n## Other\n") is None


def test_real_chip_iou_against_throughput(tmp_path):
    """pareto.py --real/--throughput: a point per model variant and band at its plain pass Mpx/s, the threshold
    beside it, the front per band (higher IoU, higher Mpx/s)."""
    import pareto
    real = tmp_path / "benchmark_real.json"
    real.write_text(json.dumps({"pooled": {"VH": {"model_iou": 0.6, "threshold_iou": 0.5},
                                           "VV": {"model_iou": 0.4, "threshold_iou": 0.45}}}))
    rows = [{"label": label, "run": run, "pass_mpx_s": rate * (1 if run == "plain" else 0.5)}
            for label, rate in (("UnetLight", 2.0), ("UnetLight ONNX float", 2.5), ("UnetLight ONNX int8", 3.0),
                                ("threshold (--method threshold)", 20.0)) for run in RUNS]
    throughput = tmp_path / "t.json"
    throughput.write_text(json.dumps({"throughput": {"rows": rows}}))
    points = pareto.main(["--real", f"UnetLight={real}", "--throughput", str(throughput), "--out", str(tmp_path / "p")])
    by = {p["label"]: p for p in points}
    assert set(by) == {f"{name} {band}" for band in ("VH", "VV") for name in
                       ("UnetLight", "UnetLight ONNX float", "UnetLight ONNX int8", "threshold")}
    assert by["UnetLight ONNX int8 VH"]["mpx_s"] == 3.0 and by["threshold VV"]["iou"] == 0.45
    assert by["UnetLight ONNX int8 VH"]["front"] and by["threshold VH"]["front"] and not by["UnetLight VH"]["front"]
    assert by["threshold VV"]["front"] and not by["UnetLight ONNX int8 VV"]["front"]  # the threshold wins on VV
    assert (tmp_path / "p" / "pareto_real.png").stat().st_size > 0 and (tmp_path / "p" / "pareto_real.csv").exists()
    with pytest.raises(DataError, match="expected LABEL=benchmark_real.json"):
        pareto.main(["--real", str(real), "--throughput", str(throughput)])
