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


def test_the_five_chips_recipe_keeps_chip_ids(tmp_path):
    """docs/real-sar.md's recipe on tiny fakes of both release formats: Sen1Floods11 (S1Hand with VV, VH;
    LabelHand -1/0/1) and STAC Overflow ({chip}_vv.tif, {chip}_vh.tif, {chip}.tif), each converted with
    --val-share 0 and the two train/ folders merged: every patch's chip is recovered, underscores included."""
    import shutil
    from affine import Affine
    from conftest import write_geotiff
    from prepare_data import main as prepare
    rng = np.random.default_rng(2)
    tif = lambda path, array: write_geotiff(path, array, crs="EPSG:4326",  # noqa: E731
                                            transform=Affine(0.001, 0, -3.0, 0, -0.001, 40.0))
    tif(tmp_path / "s1f11" / "Spain_7370579_S1Hand.tif", rng.normal(-15, 3, (2, 8, 8)).astype(np.float32))
    tif(tmp_path / "s1f11" / "Spain_7370579_LabelHand.tif", rng.integers(-1, 2, (8, 8)).astype(np.int16))
    for chip in ("awc00", "jja10"):
        for band in ("vv", "vh"):
            tif(tmp_path / "stac" / f"{chip}_{band}.tif", rng.normal(-18, 3, (8, 8)).astype(np.float32))
        tif(tmp_path / "stac" / f"{chip}.tif", rng.integers(0, 2, (8, 8)).astype(np.uint8))
    prepare(["sen1floods11", str(tmp_path / "s1f11"), "--out", str(tmp_path / "parts" / "a"), "--patch", "4",
             "--val-share", "0"])
    prepare(["s1-chips", str(tmp_path / "stac"), "--out", str(tmp_path / "parts" / "b"), "--patch", "4",
             "--val-share", "0"])
    for part in ("a", "b"):
        shutil.copytree(tmp_path / "parts" / part / "train", tmp_path / "real" / "train", dirs_exist_ok=True)
    groups = find_groups(tmp_path / "real")
    assert sorted(groups) == ["Spain_7370579", "awc00", "jja10"] and all(len(p) == 4 for p in groups.values())
    assert sorted(groups["Spain_7370579"][0].bands) == ["VH", "VV"]


def test_stitch_puts_patches_back_at_their_windows(chips_root, tmp_path):
    from lib.bench.chip_methods import stitch
    from lib.bench.chips import Patch
    patches = []
    for patch_id, value in (("c_r0c0", -10.0), ("c_r1c1", -20.0)):   # r0c1 and r1c0 missing: no-data there
        np.save(tmp_path / f"{patch_id}.npy", np.full((2, 3), 1, np.uint8))
        np.save(tmp_path / f"{patch_id}_VV.npy", np.full((2, 3), value, np.float32))
        patches.append(Patch(patch_id, tmp_path / f"{patch_id}.npy", {"VV": tmp_path / f"{patch_id}_VV.npy"}))
    image, label = stitch(patches, "VV")
    assert image.shape == label.shape == (4, 6)
    assert (image[:2, :3] == -10).all() and (image[2:, 3:] == -20).all() and np.isnan(image[:2, 3:]).all()
    assert (label[2:, :3] == 255).all() and (label[:2, :3] == 1).all()


@pytest.fixture(scope="module")
def methods_run(bench_run, chips_root):
    """The complete folds of bench_run, run again with METHODS: no fold is trained again."""
    out, _ = bench_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a complete fold was trained again"))
        benchmark_real.main([str(chips_root), f"OUTPUT_DIR={out}", *TINY, "METHODS=model,threshold,ensemble"])
    return out, json.loads((out / "benchmark_real_methods.json").read_text())


def test_methods_map_each_chip_whole(methods_run, chips_root):
    out, document = methods_run
    assert document["bands"] == ["VV", "VH"] and document["methods"] == ["model", "threshold", "ensemble"]
    assert "| pooled over 3 chips |" in (out / "benchmark_real_methods.md").read_text()
    groups = find_groups(chips_root)
    for chip, patches in groups.items():
        record = json.loads((out / chip / "score.json").read_text())["methods"]
        label = np.concatenate([np.load(p.label) for p in sorted(patches, key=lambda p: p.patch_id)], axis=1)
        for band in ("VV", "VH"):
            for method in ("model", "threshold", "ensemble"):   # every labelled pixel of the chip scored once
                assert sum(record["counts"][method][band]) == label.size
            # the threshold method's mask is the chip's backscatter below the threshold it recorded
            image = np.concatenate([np.load(p.bands[band]) for p in sorted(patches, key=lambda p: p.patch_id)], axis=1)
            water, truth = image < record["thresholds"][band]["threshold_db"], label == 1
            assert record["counts"]["threshold"][band] == [int((water & truth).sum()), int((water & ~truth).sum()),
                                                           int((~water & truth).sum()), int((~water & ~truth).sum())]
    pooled = document["table"]["VH"]["pooled_counts"]["threshold"]
    assert pooled == np.sum([json.loads((out / c / "score.json").read_text())["methods"]["counts"]["threshold"]["VH"]
                             for c in CHIPS], axis=0).tolist()
    assert document["table"]["VH"]["pooled"]["threshold"]["iou"] > 0.9   # the chips are separable at one level


def test_checkpoint_is_scored_on_every_chip_without_training(bench_run, chips_root, tmp_path, monkeypatch):
    out, _ = bench_run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("CHECKPOINT trains no fold"))
    given = out / "lake" / "run" / "last.pt"
    summary = benchmark_real.main([str(chips_root), f"OUTPUT_DIR={tmp_path / 'given'}", f"CHECKPOINT={given}",
                                   "METHODS=threshold"])
    assert sorted(r["chip"] for r in summary["rows"] if r["band"] == "VV") == sorted(CHIPS)
    record = json.loads((tmp_path / "given" / "dry" / "score.json").read_text())
    assert record["settings"]["checkpoint"] == str(given) and record["methods"]["names"] == ["threshold"]
    assert not (tmp_path / "given" / "dry" / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["METHODS=model,magic"], "METHODS='model,magic': give predict.py methods"),
    (["CHECKPOINT=/nonexistent/best.pt"], "no such file"),
    (["CHECKPOINT=/nonexistent/best.pt", "EPOCHS=3"], "EPOCHS: CHECKPOINT"),
])
def test_bad_methods_or_checkpoint_is_one_error(chips_root, args, message):
    with pytest.raises(ConfigError, match=message):
        benchmark_real.main([str(chips_root), *args])


def test_methods_map_each_chip_with_a_stacked_fold_model(chips_root, tmp_path, monkeypatch):
    """INPUT_BANDS=VV+VH folds: the model maps both bands at once (one column for both), the threshold and
    the ensemble each band's threshold (predict.py --threshold-band)."""
    monkeypatch.setattr(subprocess, "run", run_in_process)
    out = tmp_path / "stacked"
    benchmark_real.main([str(chips_root), f"OUTPUT_DIR={out}", *TINY, "TRAIN_BANDS=VV,VH", "INPUT_BANDS=VV+VH",
                         "CHIPS=lake,dry", "METHODS=model,threshold,ensemble"])
    document = json.loads((out / "benchmark_real_methods.json").read_text())
    assert document["bands"] == ["VV", "VH"]
    groups = find_groups(chips_root)
    for chip in ("lake", "dry"):
        record = json.loads((out / chip / "score.json").read_text())["methods"]
        patches = sorted(groups[chip], key=lambda p: p.patch_id)
        label = np.concatenate([np.load(p.label) for p in patches], axis=1)
        assert record["counts"]["model"]["VV"] == record["counts"]["model"]["VH"]
        for band in ("VV", "VH"):
            image = np.concatenate([np.load(p.bands[band]) for p in patches], axis=1)
            water, truth = image < record["thresholds"][band]["threshold_db"], label == 1
            assert record["counts"]["threshold"][band] == [int((water & truth).sum()), int((water & ~truth).sum()),
                                                           int((~water & truth).sum()), int((~water & ~truth).sum())]
            assert sum(record["counts"]["ensemble"][band]) == label.size
