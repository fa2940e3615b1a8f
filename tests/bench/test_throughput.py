"""benchmark.py --throughput (lib/bench/throughput.py): whole-scene mapping without bf16 as a section of the
benchmark page, measured on a tiny pair, the rest of the page kept."""
from __future__ import annotations

import json

import torch

import benchmark
from lib.bench.throughput import HEADING, RUNS, section_of, with_section

pytestmark = __import__("pytest").mark.usefixtures("one_thread")  # conftest.py


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
                      "UnetLight ONNX int8"}
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
