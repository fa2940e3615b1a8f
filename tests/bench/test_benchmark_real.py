"""benchmark_real.py: leave-one-chip-out folds made of links, one row per held-out chip, the mean over chips
with water against the pooled IoU, a chip without water scored by its false-positive share, folds skipped
when complete, constants passed through to every fold's script, and its files."""
from __future__ import annotations

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY_SIZE

sys.path.insert(0, str(ROOT))
import benchmark_real  # noqa: E402
from lib.bench.chip_table import summarize  # noqa: E402
from lib.bench.chips import find_groups, link_fold  # noqa: E402
from lib.errors import ConfigError, DataError  # noqa: E402

CHIPS = {"lake": 0.5, "river": 0.2, "dry": 0.0}   # chip id -> water share of its patches


def write_chip(root: Path, chip: str, water_share: float, rng, patches=2) -> None:
    """Patches {chip}_r0c{j}: water where the row is in the top `water_share` (dark in dB), land below."""
    for split in ("img", "lab"):
        (root / "train" / split).mkdir(parents=True, exist_ok=True)
    for j in range(patches):
        label = np.zeros((TINY_SIZE, TINY_SIZE), np.uint8)
        label[: int(TINY_SIZE * water_share)] = 1
        np.save(root / "train" / "lab" / f"{chip}_r0c{j}.npy", label)
        for band, (wet, dry) in {"VV": (-22.0, -9.0), "VH": (-28.0, -16.0)}.items():
            image = np.where(label == 1, wet, dry) + rng.normal(0, 1.5, label.shape)
            np.save(root / "train" / "img" / f"{chip}_r0c{j}_{band}.npy", image.astype(np.float32))


@pytest.fixture(scope="module")
def chips_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chips") / "real"
    rng = np.random.default_rng(0)
    for chip, share in CHIPS.items():
        write_chip(root, chip, share, rng)
    return root


TINY = ["SCRIPT=train_unetlight.py", "EPOCHS=2", "WIDTH=4", f"IMAGE_SIZE={TINY_SIZE}", "BATCH_SIZE=2", "NUM_WORKERS=0",
        "DEVICE=cpu", "PRECISION=fp32", "SEED=3"]


def run_in_process(command, **_):
    """subprocess.run of `python SCRIPT NAME=value ...`, run in this process (spares a torch import per fold)."""
    argv = sys.argv
    sys.argv = [str(c) for c in command[1:]]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_:
        return subprocess.CompletedProcess(command, exit_.code or 0)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(command, 0)


@pytest.fixture(scope="module")
def bench_run(chips_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "run", run_in_process)
        summary = benchmark_real.main([str(chips_root), f"OUTPUT_DIR={out}", *TINY])
    return out, summary


def test_groups_and_fold_links(chips_root, tmp_path):
    groups = find_groups(chips_root)
    assert sorted(groups) == sorted(CHIPS) and all(len(p) == 2 for p in groups.values())
    sizes = link_fold(groups, "dry", tmp_path / "fold")
    assert sizes == {"train": 4, "val": 2}
    val = sorted(p.name for p in (tmp_path / "fold" / "val" / "img").iterdir())
    assert val == ["dry_r0c0_VH.npy", "dry_r0c0_VV.npy", "dry_r0c1_VH.npy", "dry_r0c1_VV.npy"]
    assert (tmp_path / "fold" / "train" / "lab" / "lake_r0c1.npy").is_symlink()
    assert sorted(find_groups(chips_root, "^(l|r|d)")) == ["d", "l", "r"]   # GROUP_BY as prepare_data's --group-by


def test_rows_per_chip_and_files(bench_run):
    out, summary = bench_run
    assert summary["bands"] == ["VV", "VH"]
    assert sorted((r["chip"], r["band"]) for r in summary["rows"]) == sorted((c, b) for c in CHIPS for b in ("VV", "VH"))
    for suffix in ("csv", "json", "md", "png"):
        assert (out / f"benchmark_real.{suffix}").stat().st_size > 0
    with open(out / "benchmark_real.csv") as handle:
        kinds = [row["kind"] for row in csv.DictReader(handle)]
    assert kinds.count("chip") == 6 and kinds.count("pooled") == 2 and kinds.count("mean (chips with water)") == 2
    document = json.loads((out / "benchmark_real.json").read_text())
    assert document["wins"]["VH"]["chips"] == 3
    for chip in CHIPS:  # each fold keeps its folder; the model is last.pt, the last epoch
        record = json.loads((out / chip / "score.json").read_text())
        assert record["epoch"] == 2 and (out / chip / "run" / "last.pt").exists()


def test_no_water_chip_scored_by_false_positives(bench_run):
    _, summary = bench_run
    dry = next(r for r in summary["rows"] if r["chip"] == "dry" and r["band"] == "VH")
    assert dry["water_share"] == 0 and dry["model_iou"] is None and dry["threshold_iou"] is None
    assert 0 <= dry["model_fp_share"] <= 1 and 0 <= dry["threshold_fp_share"] < 0.05
    assert summary["mean"]["VH"]["chips"] == 2        # the dry chip is left out of the IoU means
    assert summary["pooled"]["VH"]["chips"] == 3


def test_threshold_fitted_on_the_other_chips(bench_run):
    _, summary = bench_run
    for row in summary["rows"]:   # the chips are separable at one level: the fitted threshold finds the water
        if row["model_iou"] is not None:
            assert row["threshold_iou"] > 0.9


def test_constants_pass_through(bench_run):
    out, _ = bench_run
    constants = json.loads((out / "lake" / "run" / "summary.json").read_text())["constants"]
    assert constants["WIDTH"] == 4 and constants["EPOCHS"] == 2 and constants["SEED"] == 3
    assert list(constants["TRAIN_BANDS"]) == ["VV", "VH"]           # the benchmark's default for real chips
    assert constants["PATIENCE"] >= 10**6 and constants["PLATEAU_PATIENCE"] >= 10**6  # held-out chip steers nothing
    assert constants["DATA_ROOT"] == str(out / "lake" / "data")


def test_complete_folds_are_skipped(bench_run, chips_root, monkeypatch):
    out, summary = bench_run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a complete fold was trained again"))
    again = benchmark_real.main([str(chips_root), f"OUTPUT_DIR={out}", *TINY])
    assert again["pooled"] == summary["pooled"]
    with pytest.raises(ConfigError, match="other settings"):   # never silently mixed with another command's folds
        benchmark_real.main([str(chips_root), f"OUTPUT_DIR={out}", *TINY[:-1], "SEED=4"])


def test_pooled_iou_sums_counts_mean_averages_chips():
    fold = lambda counts: {"bands": ["VH"], "patches": 1, "epoch": 1, "thresholds": {"VH": "VH < -20 dB"},  # noqa: E731
                           "counts": {m: {"VH": counts[m]} for m in ("model", "threshold", "otsu")}}
    folds = {"big": fold({"model": [90, 10, 0, 900], "threshold": [50, 0, 50, 900], "otsu": [50, 0, 50, 900]}),
             "small": fold({"model": [0, 0, 10, 990], "threshold": [10, 0, 0, 990], "otsu": [10, 0, 0, 990]}),
             "dry": fold({"model": [0, 0, 0, 1000], "threshold": [0, 100, 0, 900], "otsu": [0, 50, 0, 950]})}
    summary = summarize(folds)
    assert summary["mean"]["VH"]["model_iou"] == pytest.approx((0.9 + 0.0) / 2)
    assert summary["pooled"]["VH"]["model_iou"] == pytest.approx(90 / (90 + 10 + 10))
    assert summary["pooled"]["VH"]["threshold_iou"] == pytest.approx(60 / (60 + 100 + 50))
    assert summary["wins"]["VH"] == {"model": 2, "chips": 3}   # big (IoU) and dry (fewer false positives)
    small = next(r for r in summary["rows"] if r["chip"] == "small")
    assert small["constant"] == "all land" and not small["model_wins"]


@pytest.mark.parametrize("args, message", [
    (["EPOCHS=1", "NOT_A_CONSTANT=3"], "NOT_A_CONSTANT: not a constant"),
    (["SCRIPT=evaluate.py"], "not a training script"),
    (["CHIPS=lake,atlantis"], "atlantis not in DATA_ROOT"),
    (["DATA_ROOT=x"], "first argument"),
])
def test_bad_input_is_one_error(chips_root, args, message):
    with pytest.raises((ConfigError, DataError), match=message):
        benchmark_real.main([str(chips_root), *args])


def test_patch_ids_without_chip_are_refused(tmp_path):
    (tmp_path / "train" / "img").mkdir(parents=True)
    (tmp_path / "train" / "lab").mkdir()
    np.save(tmp_path / "train" / "lab" / "patch7.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="patch7.npy: patch id 'patch7' does not end in _r<i>c<j>"):
        find_groups(tmp_path)
