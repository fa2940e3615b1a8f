"""Threshold baselines (lib/train/baseline.py): the fit on hand-computed cases, Otsu, the record the engine writes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_constants
from lib.train.baseline import Threshold, fit_threshold, otsu_threshold, threshold_baseline
from lib.data.dataset import BandPatchDataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_finds_the_hand_computed_best_threshold():
    # sorted dB values with water 1 1 0 1 0 0: calling the k darkest water gives IoU
    # k=1: 1/3, k=2: 2/3, k=3: 2/4, k=4: 3/4 (best), k=5: 3/5, k=6: 3/6
    values = np.array([-10.0, -25.0, -15.0, -5.0, -22.0, -20.0])
    water = np.array([0, 1, 1, 0, 1, 0], bool)
    threshold, iou = fit_threshold(values, water)
    assert threshold.water_below
    assert -15.0 < threshold.value < -10.0
    assert iou == pytest.approx(0.75)
    assert threshold.predict(values).tolist() == [False, True, True, False, True, True]


def test_fit_finds_the_polarity_of_a_band_where_water_is_bright():
    values = np.array([0.5, 0.4, -0.2, -0.3])  # NDWI: water above land
    threshold, iou = fit_threshold(values, np.array([1, 1, 0, 0], bool))
    assert not threshold.water_below and -0.2 < threshold.value < 0.4 and iou == 1.0


def test_otsu_splits_two_modes_as_opencv_does():
    import cv2
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-24, 1.0, 3000), rng.normal(-10, 1.5, 7000)])
    lo, hi = values.min(), values.max()
    as_uint8 = np.round((values - lo) / (hi - lo) * 255).astype(np.uint8).reshape(1, -1)
    level, _ = cv2.threshold(as_uint8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = otsu_threshold(values)
    assert -22.0 < threshold < -13.0  # between the two modes
    assert threshold == pytest.approx(lo + (level + 0.5) / 255 * (hi - lo), abs=2 * (hi - lo) / 255)


def write_patches(root, split, bands, n=3, size=16):
    """Patches whose left half is water at -24 dB (VV) and whose right half is land at -8 dB."""
    rng = np.random.default_rng(len(split))
    (root / split / "img").mkdir(parents=True)
    (root / split / "lab").mkdir(parents=True)
    for i in range(n):
        label = np.zeros((size, size), np.int16)
        label[:, : size // 2] = 1
        label[0, 0] = -1  # no-data: left out
        np.save(root / split / "lab" / f"p{i}.npy", label)
        for band in bands:
            shift = 0.0 if band == "VV" else -7.0
            image = np.where(label == 1, -24.0, -8.0) + shift + rng.normal(0, 0.5, label.shape)
            np.save(root / split / "img" / f"p{i}_{band}.npy", image.astype(np.float32))


def test_baseline_record_has_the_documented_schema(tmp_path):
    write_patches(tmp_path, "train", ("VV", "VH"))
    write_patches(tmp_path, "val", ("VV", "VH"))
    train_set = BandPatchDataset(tmp_path, "train", ("VV", "VH"), train=True, image_size=16)
    val_set = BandPatchDataset(tmp_path, "val", ("VV", "VH"), train=False, image_size=16)
    lines = []
    baseline = threshold_baseline(train_set, val_set, ("VV", "VH"), log=lines.append)
    assert baseline["method"] == "threshold" and baseline["fitted_on"] == "train"
    vv = baseline["bands"]["VV"]
    assert vv["water_below"] and -22.0 < vv["threshold"] < -10.0  # in dB, not normalized units
    assert baseline["bands"]["VH"]["threshold"] < -17.0
    assert vv["iou"] == vv["f1"] == vv["precision"] == vv["recall"] == 1.0
    assert baseline["iou"] == 1.0 and baseline["otsu_per_image"]["iou"] == 1.0
    assert lines[0].startswith("threshold baseline (VV < ") and "dB, fitted on train): IoU VV 1.000" in lines[0]
    json.dumps(baseline, allow_nan=False)


def test_training_records_the_baseline_in_summary_and_checkpoint(tiny_data, tmp_path, capsys):
    from lib.checkpoint import read_checkpoint
    from lib.train.engine import train
    summary = train(tiny_constants(tiny_data, tmp_path / "run"), "MLP_256", {"widths": [8]})
    assert "threshold baseline (VV < " in capsys.readouterr().out
    baseline = json.loads((tmp_path / "run" / "summary.json").read_text())["baseline"]
    assert baseline == summary["baseline"]
    assert set(baseline["bands"]) == {"VV", "VH"} and 0.0 < baseline["iou"] <= 1.0
    assert read_checkpoint(tmp_path / "run" / "best.pt")["baseline"]["bands"]["VH"]["threshold"] == \
        baseline["bands"]["VH"]["threshold"]


def test_threshold_describes_itself_in_band_units():
    assert Threshold(-19.74, True).describe("VH") == "VH < -19.7 dB"
    assert Threshold(0.1, False).describe("NDWI") == "NDWI > 0.1"


def test_evaluate_adds_baseline_rows_from_the_checkpoint_or_fitted_on_the_split(tiny_data, tmp_path):
    import evaluate
    from lib.checkpoint import read_checkpoint, save_checkpoint
    from lib.train.engine import train
    train(tiny_constants(tiny_data, tmp_path / "run"), "MLP_256", {"widths": [8]})
    args = ["--data-root", str(tiny_data), "--device", "cpu", "--workers", "0"]
    result = evaluate.main([str(tmp_path / "run" / "best.pt"), *args, "--out", str(tmp_path / "a")])
    (model_row,), (threshold_row, otsu_row) = result["results"], result["baselines"]
    recorded = read_checkpoint(tmp_path / "run" / "best.pt")["baseline"]
    assert threshold_row["kind"] == otsu_row["kind"] == "baseline"
    assert threshold_row["model"].startswith("threshold VV<") and "(fit on train)" in threshold_row["model"]
    assert threshold_row["iou_VH"] == pytest.approx(recorded["bands"]["VH"]["iou"])  # same data, same metric
    assert otsu_row["model"] == "Otsu per image" and otsu_row["iou"] == pytest.approx(recorded["otsu_per_image"]["iou"])
    assert "threshold VV<" in (tmp_path / "a" / "evaluation.csv").read_text()
    # a checkpoint without a recorded baseline: fitted on the evaluated split, and marked so
    checkpoint = read_checkpoint(tmp_path / "run" / "best.pt")
    del checkpoint["baseline"]
    save_checkpoint(checkpoint, tmp_path / "old.pt")
    rows = evaluate.main([str(tmp_path / "old.pt"), *args, "--out", str(tmp_path / "b")])["baselines"]
    assert "(fit on val (evaluated split))" in rows[0]["model"] and rows[0]["iou"] >= threshold_row["iou"] - 1e-9
    assert evaluate.main([str(tmp_path / "old.pt"), *args, "--no-baselines", "--out", str(tmp_path / "c")])["baselines"] == []
