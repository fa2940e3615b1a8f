"""Distillation left one chip out: benchmark_real.py SCRIPT=kd.py takes each fold's teacher from the teacher
run's fold that held out the same chip, and kd_study.py REAL_DATA=... runs every method that way into one
table beside the teacher and the threshold."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_SIZE
from test_benchmark_real import TINY, bench_run, chips_root, run_in_process  # noqa: F401 (fixtures)

sys.path.insert(0, str(ROOT))
import benchmark_real  # noqa: E402
from lib.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = ["STUDENTS=UnetLight", "SEEDS=1", "METHODS={'alone': None, 'response': {}}", "EPOCHS=2", "BATCH_SIZE=2",
         f"IMAGE_SIZE={TINY_SIZE}", "NUM_WORKERS=0", "PRECISION=fp32", "WARMUP_EPOCHS=1", "COST_TABLE=0"]


@pytest.fixture(scope="module")
def real_study(bench_run, chips_root, tmp_path_factory):  # noqa: F811
    """kd_study.py on the tiny chips, the tiny UnetLight folds of bench_run as the teachers."""
    import kd_study
    teachers, _ = bench_run
    out = tmp_path_factory.mktemp("study") / "out"
    argv = ["kd_study.py", f"REAL_DATA={chips_root}", f"TEACHERS={teachers}", f"OUTPUT_DIR={out}", *STUDY]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "run", run_in_process)
        patch.setattr(sys, "argv", argv)
        kd_study.main()
    return out, teachers


def test_each_fold_is_distilled_from_the_teacher_that_held_out_its_chip(real_study):
    out, teachers = real_study
    for chip in ("lake", "river", "dry"):
        summary = json.loads((out / "unetlight" / "response" / "seed1" / chip / "run" / "summary.json").read_text())
        assert summary["teacher_checkpoint"] == str(teachers / chip / "run" / "last.pt")
        assert summary["constants"]["DATA_ROOT"] == str(out / "unetlight" / "response" / "seed1" / chip / "data")
        alone = json.loads((out / "unetlight" / "alone" / "seed1" / chip / "run" / "summary.json").read_text())
        assert "teacher_checkpoint" not in alone and alone["constants"]["SEED"] == 1
        assert list(alone["constants"]["TRAIN_BANDS"]) == ["VV", "VH"]   # the teacher's bands


def test_real_study_table_beside_teacher_and_threshold(real_study):
    out, teachers = real_study
    document = json.loads((out / "study.json").read_text())
    assert [(r["method"], r["seed"]) for r in document["runs"]] == [("alone", 1), ("response", 1)]
    teacher = json.loads((teachers / "benchmark_real.json").read_text())
    pooled_teacher = (teacher["pooled"]["VV"]["model_iou"] + teacher["pooled"]["VH"]["model_iou"]) / 2
    for row in document["table"]:
        assert row["teacher"] == pytest.approx(pooled_teacher)
        assert row["gap_to_teacher"] == pytest.approx(pooled_teacher - row["pooled"])
        assert 0.9 < row["threshold"] <= 1     # the tiny chips are separable at one level
    alone = next(r for r in document["table"] if r["method"] == "alone")
    assert alone["gain_over_alone"] == pytest.approx(0.0)


def test_table_only_reads_the_finished_runs(real_study, chips_root, monkeypatch, capsys):  # noqa: F811
    import kd_study
    out, teachers = real_study
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("TABLE_ONLY trained something"))
    monkeypatch.setattr(sys, "argv", ["kd_study.py", f"REAL_DATA={chips_root}", f"TEACHERS={teachers}",
                                      f"OUTPUT_DIR={out}", "TABLE_ONLY=1", "EPOCHS=2"])
    kd_study.main()
    printed = capsys.readouterr().out
    table = json.loads((out / "study.json").read_text())["table"]
    assert [r["method"] for r in table] == ["alone", "response"] and "seeds 1," in printed


def test_real_study_aggregate_by_hand():
    from lib_kd.real_study import aggregate_real
    rows = [{"student": "S", "method": m, "seed": s, "pooled": v, "chip_mean": v - 0.1, "threshold": 0.5}
            for m, s, v in (("alone", 1, 0.40), ("alone", 2, 0.44), ("mimic", 1, 0.50), ("mimic", 2, 0.56))]
    table = {r["method"]: r for r in aggregate_real(rows, {"pooled": 0.6, "chip_mean": 0.55})}
    assert table["mimic"]["pooled"] == pytest.approx(0.53) and table["mimic"]["chip_mean"] == pytest.approx(0.43)
    assert table["mimic"]["gap_to_teacher"] == pytest.approx(0.07)
    assert table["mimic"]["gain_over_alone"] == pytest.approx(0.11)
    assert table["alone"]["std"] == pytest.approx(0.028284, abs=1e-5)


def test_fold_teacher_must_have_held_out_the_same_chip(bench_run, chips_root, tmp_path):  # noqa: F811
    teachers, _ = bench_run
    fake = tmp_path / "teachers" / "lake"
    (fake / "run").mkdir(parents=True)
    (fake / "run" / "last.pt").write_bytes((teachers / "lake" / "run" / "last.pt").read_bytes())
    (fake / "score.json").write_text(json.dumps({"settings": {"train_chips": ["dry"]}}))
    with pytest.raises(ConfigError, match="the teacher of lake trained on dry"):
        benchmark_real.main([str(chips_root), "SCRIPT=kd.py", f"TEACHERS={tmp_path / 'teachers'}", "CHIPS=lake",
                             f"OUTPUT_DIR={tmp_path / 'out'}", "STUDENT=UnetLight"])


@pytest.mark.parametrize("args, message", [
    (["SCRIPT=kd.py"], "SCRIPT=kd.py needs TEACHERS"),
    (["SCRIPT=kd.py", "TEACHERS=t", "TEACHER_CHECKPOINT=x.pt"], "pass TEACHERS only"),
    (["SCRIPT=train_unetlight.py", "TEACHERS=t"], "only SCRIPT=kd.py distils"),
])
def test_bad_teacher_settings_are_one_error(chips_root, args, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        benchmark_real.main([str(chips_root), *args])


def test_batch_size_reaches_every_fold(bench_run):  # noqa: F811
    """BATCH_SIZE is the scoring batch and the folds' training batch too (it used to stop at scoring)."""
    out, _ = bench_run
    assert "BATCH_SIZE=2" in TINY
    assert json.loads((out / "lake" / "run" / "summary.json").read_text())["constants"]["BATCH_SIZE"] == 2
