"""Fail safe, second round (issue 25, class 1): a new run never replaces a finished one without OVERWRITE=1,
and a run never writes over a file it reads (kd.py: tests/kd/test_kd_failsafe.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import tiny_constants
from lib.checkpoint import file_sha256, read_checkpoint
from lib.errors import ConfigError, OutputError
from lib.train.engine import train

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = {"width": 4}


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_constants(tiny_data, output), "UnetLight", ARGS)
    return output


def copy_of(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def fingerprints(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_new_run_into_a_finished_runs_folder_is_refused_and_leaves_it_untouched(finished_run, tiny_data, tmp_path):
    output = copy_of(finished_run, tmp_path)
    before = fingerprints(output)
    with pytest.raises(OutputError) as found:
        train(tiny_constants(tiny_data, output, EPOCHS=2, LR=1e-2), "UnetLight", ARGS)
    message = str(found.value)
    assert f"OUTPUT_DIR {output} holds a run (best.pt, last.pt)" in message and "RESUME=1" in message
    assert "OVERWRITE=1" in message and "\n" not in message
    assert fingerprints(output) == before  # not a byte changed, and the lock is gone again


def test_an_interrupted_run_with_only_last_pt_is_protected_too(finished_run, tiny_data, tmp_path):
    output = copy_of(finished_run, tmp_path)
    (output / "best.pt").unlink()
    with pytest.raises(OutputError, match=r"holds a run \(last\.pt\)"):
        train(tiny_constants(tiny_data, output), "UnetLight", ARGS)


def test_overwrite_replaces_the_run_and_leaves_nothing_of_the_old_one(finished_run, tiny_data, tmp_path, capsys):
    output = copy_of(finished_run, tmp_path)
    old_best = file_sha256(output / "best.pt")
    (output / "curves.png").unlink()  # the new run writes it again: proves the old outputs were removed first
    train(tiny_constants(tiny_data, output, OVERWRITE=True, SEED=7), "UnetLight", ARGS)
    assert "OVERWRITE=1: removed the previous run's best.pt, last.pt, history.csv, summary.json" in capsys.readouterr().out
    assert file_sha256(output / "best.pt") != old_best
    assert read_checkpoint(output / "best.pt")["constants"]["SEED"] == 7


def test_resume_and_overwrite_together_are_refused(finished_run, tiny_data, tmp_path):
    output = copy_of(finished_run, tmp_path)
    with pytest.raises(ConfigError, match="RESUME=1 and OVERWRITE=1 contradict"):
        train(tiny_constants(tiny_data, output, RESUME=True, OVERWRITE=True, EPOCHS=2), "UnetLight", ARGS)


def test_an_empty_or_unrelated_folder_is_fine(tiny_data, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    train(tiny_constants(tiny_data, output), "UnetLight", ARGS)
    assert (output / "best.pt").is_file() and (output / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("constant", ["TEACHER_CHECKPOINT", "ENCODER_WEIGHTS"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_never_writes_over_a_file_it_reads(finished_run, tiny_data, tmp_path, constant, overwrite):
    output = copy_of(finished_run, tmp_path)
    before = fingerprints(output)
    spelled = output / "." / "best.pt"  # another spelling of the same file
    with pytest.raises(ConfigError) as found:
        train(tiny_constants(tiny_data, output, OVERWRITE=overwrite, **{constant: str(spelled)}), "UnetLight", ARGS)
    assert f"{constant} {spelled} is the best.pt this run would write into OUTPUT_DIR {output}" in str(found.value)
    assert fingerprints(output) == before

