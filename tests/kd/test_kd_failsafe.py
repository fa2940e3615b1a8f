"""Fail safe, second round (issue 25) for kd.py: never over the teacher's own files, and no temperature that
silently zeroes the KD term."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import tiny_constants
from lib.checkpoint import file_sha256
from lib.cli import run
from lib.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def kd_constants(tiny_data, output, teacher, **overrides) -> dict:
    import kd
    from lib.config import script_constants
    c = {**script_constants(vars(kd)), **tiny_constants(tiny_data, output), "TEACHER_CHECKPOINT": str(teacher),
         "PATCH": 16, "HIDDEN": 16, "TOKENS_MLP": 16, "CHANNELS_MLP": 32, "COST_TABLE": False}
    c.pop("ENCODER_WEIGHTS")
    return {**c, **overrides}


@pytest.mark.parametrize("overwrite", [False, True])
def test_kd_into_the_teachers_folder_is_refused_even_with_overwrite(tiny_pspnet, tiny_data, tmp_path, overwrite):
    from lib_kd.training_kd import distill
    teacher_dir = Path(shutil.copytree(tiny_pspnet.parent, tmp_path / "teacher"))
    before = {p.name: file_sha256(p) for p in teacher_dir.iterdir()}
    with pytest.raises(ConfigError, match=r"TEACHER_CHECKPOINT .*teacher/best\.pt is the best\.pt this run would write"):
        distill(kd_constants(tiny_data, teacher_dir, teacher_dir / "best.pt", OVERWRITE=overwrite))
    assert {p.name: file_sha256(p) for p in teacher_dir.iterdir()} == before


@pytest.mark.parametrize("value", ["1e-30", "0.001", "1e30"])
def test_a_temperature_that_zeroes_or_overflows_the_kd_term_is_refused(value, monkeypatch, capsys):
    import kd
    monkeypatch.setattr("sys.argv", ["kd.py", f"KD_TEMPERATURE={value}"])
    with pytest.raises(SystemExit) as stopped:
        run(kd.main)
    assert stopped.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: KD_TEMPERATURE={value!r}: expected a number from 0.01 to 1000")
