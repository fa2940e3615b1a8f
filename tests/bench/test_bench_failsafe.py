"""Fail safe, second round (issue 25) for the tools of lib/bench: export_onnx.py never replaces its checkpoint
or another non-ONNX file, benchmark.py never rewrites the docs pages or an existing result unasked, and its
counts out of range are one error line before any measuring."""
from __future__ import annotations

import hashlib
import sys

import pytest
import torch

import benchmark
import export_onnx
from lib.cli import run
from lib.errors import ConfigError, OutputError


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_main(monkeypatch, capsys, main, argv: list[str]) -> str:
    """One tool run as its command line runs it; returns stderr (after asserting exit status 1)."""
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == 1
    return capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format": "anything"}, path)  # refused before it is read: any torch file will do
    return path


@pytest.mark.parametrize("spelling", ["same", "dot", "link", "implicit"])
def test_export_onto_its_own_checkpoint_is_refused_and_the_checkpoint_kept(checkpoint, tmp_path, spelling):
    before = digest(checkpoint)
    if spelling == "implicit":  # no output given: the checkpoint's own name with .onnx is the checkpoint
        checkpoint = checkpoint.rename(tmp_path / "model.onnx")
        argv = [str(checkpoint)]
    else:
        output = {"same": checkpoint, "dot": tmp_path / "." / checkpoint.name, "link": tmp_path / "link.onnx"}[spelling]
        if spelling == "link":
            output.symlink_to(checkpoint)
        argv = [str(checkpoint), str(output)]
    with pytest.raises(OutputError, match="is the checkpoint .* itself"):
        export_onnx.main(argv)
    assert digest(checkpoint) == before


def test_export_over_another_checkpoint_or_a_folder_is_refused(checkpoint, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"format": "another run"}, other)
    before = digest(other)
    with pytest.raises(OutputError, match="not an ONNX model"):
        export_onnx.main([str(checkpoint), str(other)])
    assert digest(other) == before
    with pytest.raises(OutputError, match="is a folder"):
        export_onnx.main([str(checkpoint), str(tmp_path)])
    with pytest.raises(OutputError, match="is the checkpoint"):  # --int8 writes x.int8.onnx: also checked
        export_onnx.main([str(checkpoint.rename(tmp_path / "m.int8.onnx")), str(tmp_path / "m.onnx"), "--int8"])


def test_export_of_a_file_that_is_not_a_checkpoint_is_one_error_line(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    err = run_main(monkeypatch, capsys, lambda: export_onnx.main(sys.argv[1:]), ["export_onnx.py", str(broken)])
    assert err.startswith(f"error: {broken}: not a readable checkpoint") and err.count("\n") == 1


@pytest.mark.parametrize("option, value", [("--image-size", "0"), ("--image-size", "-5"), ("--batch-size", "0"),
                                           ("--repeats", "0"), ("--threads", "0"), ("--scene-size", "-1"),
                                           ("--max-seconds", "0")])
def test_benchmark_counts_out_of_range_are_one_error_line(option, value, tmp_path, monkeypatch, capsys):
    err = run_main(monkeypatch, capsys, benchmark.main,
                   ["benchmark.py", "--quick", option, value, "--output", str(tmp_path / "b.md")])
    assert err.startswith(f"error: {option} {value}: expected") and err.count("\n") == 1
    assert not (tmp_path / "b.md").exists()


def test_benchmark_never_writes_the_docs_pages_by_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = benchmark.parse_args([])
    assert benchmark.outputs(args) == (tmp_path.joinpath("runs/benchmark/benchmark.md").relative_to(tmp_path), None)
    assert str(benchmark.outputs(benchmark.parse_args(["--train"]))[0]) == "runs/benchmark/speed.md"
    assert str(benchmark.outputs(benchmark.parse_args(["--docs"]))[0]) == "docs/benchmark.md"
    assert str(benchmark.outputs(benchmark.parse_args(["--docs", "--train"]))[0]) == "docs/speed.md"
    with pytest.raises(ConfigError, match="--docs and --output"):
        benchmark.outputs(benchmark.parse_args(["--docs", "--output", "x.md"]))


def test_benchmark_refuses_an_existing_result_unless_overwrite(tmp_path, monkeypatch, capsys):
    page, raw = tmp_path / "b.md", tmp_path / "b.json"
    page.write_text("my earlier benchmark")
    err = run_main(monkeypatch, capsys, benchmark.main, ["benchmark.py", "--quick", "--output", str(page)])
    assert err.startswith(f"error: {page}: exists; pass --overwrite") and page.read_text() == "my earlier benchmark"
    raw.write_text("{}")
    with pytest.raises(OutputError, match="b.json: exists"):
        benchmark.outputs(benchmark.parse_args(["--output", str(tmp_path / "new.md"), "--json", str(raw)]))
    with pytest.raises(ConfigError, match="is the markdown page too"):
        benchmark.outputs(benchmark.parse_args(["--output", str(page), "--json", str(page), "--overwrite"]))
    assert benchmark.outputs(benchmark.parse_args(["--output", str(page), "--json", str(raw), "--overwrite"])) == (page, raw)
