"""pareto.py (lib/bench/pareto.py) and kd_study.py (lib_kd/study.py) on tiny runs."""
from __future__ import annotations

import csv
import json
import statistics
import sys

import pytest

import pareto
from lib.errors import DataError
from lib.bench.pareto import pareto_front
from lib_kd.study import aggregate

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_run(folder, model, args, iou, size=32, teacher=None):
    folder.mkdir(parents=True)
    summary = {"model": model, "model_args": args, "val_iou": iou, "data": {"image_size": size},
               "teacher_checkpoint": teacher}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_pareto_front_by_hand():
    points = [{"iou": 0.5, "c": 1.0}, {"iou": 0.6, "c": 2.0}, {"iou": 0.55, "c": 3.0}, {"iou": 0.6, "c": 2.5},
              {"iou": 0.4, "c": 1.0}]
    # 0.55 @ 3 is beaten by 0.6 @ 2; 0.6 @ 2.5 by 0.6 @ 2; 0.4 @ 1 by 0.5 @ 1
    assert pareto_front(points, "c") == [True, True, False, False, False]


def test_pareto_script_writes_csv_and_png(tmp_path, capsys):
    fake_run(tmp_path / "runs" / "unetlight", "UnetLight", {"width": 4}, 0.50)
    fake_run(tmp_path / "runs" / "mlp", "MLP_256", {"widths": [8, 4]}, 0.40)
    fake_run(tmp_path / "runs" / "kd_unetlight", "UnetLight", {"width": 4}, 0.55, teacher="t.pt")
    (tmp_path / "runs" / "empty").mkdir()
    points = pareto.main([str(tmp_path / "runs"), str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert {p["label"] for p in points} == {"unetlight", "mlp", "kd_unetlight"}
    kinds = {p["label"]: p["kind"] for p in points}
    assert kinds["kd_unetlight"] == "distilled" and kinds["unetlight"] == "trained"
    rows = list(csv.DictReader(open(tmp_path / "out" / "pareto.csv")))
    by_label = {row["label"]: row for row in rows}
    # same architecture, same GFLOPs: the more accurate distilled run dominates the plain one
    assert by_label["kd_unetlight"]["front_gflops"] == "True" and by_label["unetlight"]["front_gflops"] == "False"
    assert float(by_label["mlp"]["gflops"]) > 0 and float(by_label["unetlight"]["latency_ms_b32"]) > 0
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(DataError, match="no trained run"):
        pareto.main([str(tmp_path / "runs" / "empty"), "--out", str(tmp_path / "out2")])


def test_study_aggregate_by_hand():
    rows = [{"student": "S", "method": m, "seed": s, "val_iou": v, "teacher_iou": 0.7}
            for m, s, v in (("alone", 1, 0.40), ("alone", 2, 0.44), ("response", 1, 0.50), ("response", 2, 0.56))]
    table = {r["method"]: r for r in aggregate(rows)}
    assert table["response"]["mean"] == pytest.approx(0.53)
    assert table["response"]["std"] == pytest.approx(statistics.stdev([0.50, 0.56]))
    assert table["response"]["gap_to_teacher"] == pytest.approx(0.17)
    assert table["response"]["gain_over_alone"] == pytest.approx(0.11)
    assert table["alone"]["gain_over_alone"] == pytest.approx(0.0)


def test_study_runs_each_method_once(tiny_pspnet, tiny_data, tmp_path, monkeypatch, capsys):
    import kd_study
    argv = ["kd_study.py", f"TEACHER_CHECKPOINT={tiny_pspnet}", "STUDENTS=UnetLight", "SEEDS=1",
            "METHODS={'alone': None, 'response': {}, 'cwd': {'KD_CWD': 1.0}}", f"OUTPUT_DIR={tmp_path / 'study'}",
            f"DATA_ROOT={tiny_data}", "IMAGE_SIZE=64", "EPOCHS=1", "BATCH_SIZE=4", "NUM_WORKERS=0", "DEVICE=cpu",
            "WARMUP_EPOCHS=1"]
    monkeypatch.setattr(sys, "argv", argv)
    kd_study.main()
    printed = capsys.readouterr().out
    document = json.loads((tmp_path / "study" / "study.json").read_text())
    assert [(r["method"], r["seed"]) for r in document["runs"]] == [("alone", 1), ("response", 1), ("cwd", 1)]
    summary = json.loads((tmp_path / "study" / "unetlight" / "cwd" / "seed1" / "summary.json").read_text())
    assert summary["kd_methods"]["cwd"] == 1.0 and summary["constants"]["SEED"] == 1
    alone = json.loads((tmp_path / "study" / "unetlight" / "alone" / "seed1" / "summary.json").read_text())
    assert "teacher_checkpoint" not in alone and alone["model"] == "UnetLight"
    assert "=== UnetLight cwd seed 1" in printed and "Distillation study" in printed
    kd_study.main()  # everything done: nothing trained again
    again = capsys.readouterr().out
    assert "===" not in again and "3 run(s) already done" in again


def test_pspmixer_alone_is_the_student_kd_py_distils(tmp_path):
    from lib_kd.model_kd import PSPMIXER_CONSTANTS, ROOT, script_defaults
    from lib_kd.study import run_command
    kd = script_defaults(ROOT / "kd.py")
    command = run_command("PSPMixer", "alone", None, 1, tmp_path, {}, {"EPOCHS": 2, "HIDDEN": 64})
    assert command[1] == "train_pspmixer.py"
    given = dict(arg.split("=", 1) for arg in command[2:])
    assert given["HIDDEN"] == "64"  # what the study was given wins
    assert all(given[k] == str(kd[k]) for k in PSPMIXER_CONSTANTS.values() if k != "HIDDEN")


def test_alone_trains_on_the_teachers_data(tmp_path):
    """A student trained alone takes the teacher's bands, size and normalization, as kd.py does, not its
    train script's seven-band defaults: otherwise "alone" and "distilled" see different data."""
    import torch
    from lib.data.bands import band_range, normalization_table
    from lib.checkpoint import FORMAT
    from lib_kd.study import run_command
    ranges = {band: list(band_range(band, normalization_table("published"))) for band in ("VV", "VH")}
    teacher = tmp_path / "teacher.pt"
    torch.save({"format": FORMAT, "data": {"train_bands": ["VV", "VH"], "val_bands": ["VH"], "image_size": 64,
                                           "normalization": ranges}}, teacher)
    c = {"TEACHER_CHECKPOINT": str(teacher)}
    given = dict(arg.split("=", 1) for arg in run_command("UnetLight", "alone", None, 1, tmp_path, c, {})[2:])
    assert (given["TRAIN_BANDS"], given["VAL_BANDS"], given["IMAGE_SIZE"]) == ("VV,VH", "VH", "64")
    assert given["NORMALIZATION"] == "published"
    passed = dict(arg.split("=", 1) for arg in run_command("UnetLight", "alone", None, 1, tmp_path, c,
                                                           {"VAL_BANDS": "VV"})[2:])
    assert passed["VAL_BANDS"] == "VV" and passed["TRAIN_BANDS"] == "VV,VH"  # what the study was given wins
