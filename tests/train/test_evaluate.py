"""evaluate.py: metrics equal a by-hand numpy computation and training's own numbers; k-fold mean/std;
train_folds.py builds one run per fold."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import train_folds
from lib.errors import ConfigError, DataError
from conftest import ROOT, TINY_SIZE, tiny_constants
from lib.data.bands import SAR_DB_RANGE
from lib.checkpoint import FORMAT, load_model, save_checkpoint
from lib.synthetic.demo import make_demo_dataset
from lib.models.factory import build_model

BANDS = ("VV", "VH")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def mixed_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """An MLP_256 whose output bias is set so that about a third of the validation pixels are predicted
    water: every count (tp, fp, fn, tn) is non-zero, so every metric is a real ratio."""
    torch.manual_seed(3)
    model = build_model("MLP_256", {}).eval()
    ranges = {band: list(SAR_DB_RANGE) for band in BANDS}
    images = [normalize(np.load(path), ranges["VV"]) for path in sorted((tiny_data / "val" / "img").glob("*.npy"))]
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack(images))[:, None])
        model.layers[-1].bias -= torch.quantile(logits.flatten(), 0.66)
    data = {"format": "bands", "train_bands": list(BANDS), "val_bands": list(BANDS), "normalization": ranges,
            "image_size": TINY_SIZE}
    path = tmp_path_factory.mktemp("mixed") / "best.pt"
    save_checkpoint({"format": FORMAT, "model": {"name": "MLP_256", "args": {}}, "state_dict": model.state_dict(),
                     "data": data, "metrics": {}, "epoch": 1, "parameters": {},
                     "constants": {"DATA_ROOT": str(tiny_data)}}, path)
    return path


def normalize(raw: np.ndarray, band_range) -> np.ndarray:
    lo, hi = band_range
    image = np.clip((raw.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.where(np.isfinite(raw), image, 0.0).astype(np.float32)


def metrics_by_hand(checkpoint: Path, root: Path) -> dict[str, float]:
    """Dataset-wide metrics per band, straight from the .npy files with numpy."""
    model, ckpt = load_model(checkpoint)
    counts = {band: np.zeros(4, np.int64) for band in BANDS}  # tp, fp, fn, tn
    for label_path in sorted((root / "val" / "lab").glob("*.npy")):
        label = np.load(label_path)
        for band in BANDS:
            raw = np.load(root / "val" / "img" / f"{label_path.stem}_{band}.npy")
            image = normalize(raw, ckpt["data"]["normalization"][band])
            with torch.no_grad():
                water = model(torch.from_numpy(image)[None, None])[0, 0].numpy() >= 0
            valid = ((label == 0) | (label == 1)) & np.isfinite(raw)
            truth = label == 1
            counts[band] += [(water & truth & valid).sum(), (water & ~truth & valid).sum(),
                             (~water & truth & valid).sum(), (~water & ~truth & valid).sum()]
    result = {}
    for band, (tp, fp, fn, tn) in counts.items():
        assert min(tp, fp, fn, tn) > 0, "the test model should make every kind of decision"
        result.update({f"iou_{band}": tp / (tp + fp + fn), f"f1_{band}": 2 * tp / (2 * tp + fp + fn),
                       f"precision_{band}": tp / (tp + fp), f"recall_{band}": tp / (tp + fn),
                       f"accuracy_{band}": (tp + tn) / (tp + fp + fn + tn)})
    for name in ("iou", "f1", "precision", "recall", "accuracy"):
        result[name] = np.mean([result[f"{name}_{band}"] for band in BANDS])
    return result


def test_metrics_match_numpy_by_hand(mixed_checkpoint, tiny_data, tmp_path):
    out = tmp_path / "evaluation"
    report = evaluate.main([str(mixed_checkpoint), "--data-root", str(tiny_data), "--out", str(out),
                            "--batch-size", "4", "--device", "cpu", "--precision", "fp32"])
    expected = metrics_by_hand(mixed_checkpoint, tiny_data)
    row = report["results"][0]
    for key, value in expected.items():  # smp divides in float32
        assert row[key] == pytest.approx(value, rel=1e-6), key
    saved = json.loads((out / "evaluation.json").read_text())["results"][0]
    assert saved["iou_VV"] == pytest.approx(expected["iou_VV"])
    header = (out / "evaluation.csv").read_text().splitlines()[0].split(",")
    assert {"iou_VV", "f1_VH", "precision_VV", "recall_VH", "accuracy_VV", "iou"} <= set(header)


def test_same_numbers_as_training(tiny_pspnet, tiny_data, tmp_path):
    """The teacher's best.pt records its validation metrics; evaluate.py reproduces them."""
    report = evaluate.main([str(tiny_pspnet), "--data-root", str(tiny_data), "--out", str(tmp_path), "--device", "cpu",
                            "--batch-size", "4"])  # as in training: bf16 kernels may round differently per batch size
    recorded = torch.load(tiny_pspnet, weights_only=True)["metrics"]
    row = report["results"][0]
    for key in ("iou_VV", "iou_VH", "f1_VV", "precision_VH", "recall_VV", "accuracy_VH", "iou"):
        assert row[key] == pytest.approx(recorded[key], abs=1e-6), key


def test_band_selection(mixed_checkpoint, tiny_data, tmp_path):
    report = evaluate.main([str(mixed_checkpoint), "--data-root", str(tiny_data), "--bands", "VH", "--out",
                            str(tmp_path), "--device", "cpu"])
    row = report["results"][0]
    assert "iou_VH" in row and "iou_VV" not in row and row["iou"] == row["iou_VH"]


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """Two-fold tiny data and a UnetLight trained one epoch on each fold, in runs/unetlight/fold_k."""
    from lib.train.engine import train
    base = tmp_path_factory.mktemp("kfold")
    root = base / "02_kfold"
    make_demo_dataset(root, n_train=6, n_val=4, folds=2, seed=1, size=TINY_SIZE)
    checkpoints = []
    for k in (1, 2):
        output = base / "runs" / "unetlight" / f"fold_{k}"
        train(tiny_constants(root / f"fold_{k}", output, SEED=k), "UnetLight", {"width": 8})
        checkpoints.append(output / "best.pt")
    return root, checkpoints


def test_kfold_each_checkpoint_on_its_fold_with_mean_and_std(two_folds, tmp_path):
    root, checkpoints = two_folds
    report = evaluate.main([*map(str, checkpoints), "--data-root", str(root), "--out", str(tmp_path), "--device", "cpu"])
    rows = report["results"]
    assert [row["fold"] for row in rows] == [1, 2]
    assert [Path(row["data_root"]) for row in rows] == [root / "fold_1", root / "fold_2"]
    # each fold's numbers are those of evaluating it alone on its own fold folder
    for k, checkpoint in enumerate(checkpoints, start=1):
        alone = evaluate.main([str(checkpoint), "--data-root", str(root / f"fold_{k}"), "--out", str(tmp_path / f"f{k}"),
                               "--device", "cpu"])["results"][0]
        assert alone["iou_VV"] == pytest.approx(rows[k - 1]["iou_VV"])
        assert alone["loss"] == pytest.approx(rows[k - 1]["loss"])
    mean = next(row for row in report["summary"] if row["kind"] == "mean")
    std = next(row for row in report["summary"] if row["kind"] == "std")
    for key in ("iou_VV", "f1_VH", "accuracy_VV", "iou", "loss"):
        values = np.array([row[key] for row in rows])
        assert mean[key] == pytest.approx(values.mean())
        assert std[key] == pytest.approx(values.std(ddof=1))
    document = json.loads((tmp_path / "evaluation.json").read_text())
    (group, entry), = document["folds"].items()
    assert "fold_*" in group and entry["folds"] == 2 and entry["mean"]["iou"] == pytest.approx(mean["iou"])
    kinds = [line.split(",")[0] for line in (tmp_path / "evaluation.csv").read_text().splitlines()[1:]]
    assert [kind for kind in kinds if kind != "baseline"] == ["checkpoint", "checkpoint", "mean", "std"]
    assert kinds.count("baseline") == 4  # threshold and Otsu rows after each checkpoint (evaluate.py --baselines)


def test_fold_found_from_path_when_not_recorded(two_folds, tmp_path):
    root, checkpoints = two_folds
    checkpoint = torch.load(checkpoints[1], weights_only=True)
    checkpoint["constants"] = {k: v for k, v in checkpoint["constants"].items() if k != "DATA_ROOT"}
    moved = tmp_path / "elsewhere" / "fold_2" / "best.pt"
    save_checkpoint(checkpoint, moved)
    assert evaluate.fold_of(moved, checkpoint["constants"]) == 2
    row = evaluate.main([str(moved), "--data-root", str(root), "--out", str(tmp_path), "--device", "cpu"])["results"][0]
    assert Path(row["data_root"]) == root / "fold_2"
    unknown = tmp_path / "nofold" / "best.pt"
    unknown.parent.mkdir()
    shutil.copy(moved, unknown)
    with pytest.raises(DataError, match="names no fold"):
        evaluate.main([str(unknown), "--data-root", str(root), "--out", str(tmp_path), "--device", "cpu"])


def test_train_folds_plans_one_run_per_fold(two_folds, tmp_path, capsys):
    root, _ = two_folds
    checkpoints = train_folds.main([str(ROOT / "train_unetlight.py"), f"DATA_ROOT={root}", "EPOCHS=1", "WIDTH=8",
                                    f"OUTPUT_DIR={tmp_path / 'cv'}", "DRY_RUN=1"])
    assert checkpoints == [tmp_path / "cv" / "fold_1" / "best.pt", tmp_path / "cv" / "fold_2" / "best.pt"]
    out = capsys.readouterr().out
    for k in (1, 2):
        assert f"DATA_ROOT={root / f'fold_{k}'} OUTPUT_DIR={tmp_path / 'cv' / f'fold_{k}'} EPOCHS=1 WIDTH=8" in out
    assert "evaluate.py" in out and f"--data-root {root}" in out
    # the script's own OUTPUT_DIR is the default parent; FOLDS picks folds
    checkpoints = train_folds.main([str(ROOT / "train_unetlight.py"), f"DATA_ROOT={root}", "FOLDS=2", "DRY_RUN=1"])
    assert checkpoints == [Path("runs/unetlight/fold_1/best.pt"), Path("runs/unetlight/fold_2/best.pt")]
    assert train_folds.main([str(ROOT / "train_unetlight.py"), f"DATA_ROOT={root}", "FOLDS=[2]", "DRY_RUN=1"]) == \
        [Path("runs/unetlight/fold_2/best.pt")]
    with pytest.raises(ConfigError, match="fold_3"):
        train_folds.main([str(ROOT / "train_unetlight.py"), f"DATA_ROOT={root}", "FOLDS=3", "DRY_RUN=1"])


def test_kompsat5_checkpoint_evaluates_and_predicts_as_trained(tmp_path):
    """A KOMPSAT-5 checkpoint: evaluate.py reproduces the training metrics from the recorded DATA_ROOT and
    list file; predict.py's amplitude preprocessing is training's (an MLP_256 is exactly equivariant, so
    the tiled probabilities equal one pass over the dataset's own whole-scene input)."""
    import rasterio

    import predict
    from lib.train.engine import train
    from lib.data.kompsat5 import Kompsat5Dataset
    from lib.synthetic.kompsat5 import make_kompsat5_dataset
    root = tmp_path / "data_k5"
    make_kompsat5_dataset(root, n_train=2, n_val=1, size=96, seed=0)
    output = tmp_path / "k5run"
    train(tiny_constants(root, output, DATA_FORMAT="kompsat5", TRAIN_LIST="train_full/train.txt",
                         VAL_LIST="train_full/val.txt", K5_CROPS_PER_SCENE=2, AUGMENT=False), "MLP_256", {})
    checkpoint = output / "best.pt"
    row = evaluate.main([str(checkpoint), "--out", str(tmp_path / "eval"), "--device", "cpu"])["results"][0]
    recorded = torch.load(checkpoint, weights_only=True)["metrics"]
    assert row["bands"] == "HH" and Path(row["data_root"]) == root
    assert row["iou_HH"] == pytest.approx(recorded["iou_HH"], abs=1e-6)
    assert row["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)

    model, ckpt = load_model(checkpoint)
    scene = Kompsat5Dataset(root, "train_full/val.txt", train=False, image_size=TINY_SIZE, preload=False)
    image, target, _ = scene[0]
    predict.main([str(checkpoint), str(scene.samples[0].image), str(tmp_path / "mask.tif"), "--probability",
                  str(tmp_path / "p.tif"), "--no-progress", "--no-quicklook", "--precision", "fp32"])
    with rasterio.open(tmp_path / "p.tif") as dataset, rasterio.open(tmp_path / "mask.tif") as mask_file:
        probability, mask = dataset.read(1), mask_file.read(1)
    with torch.no_grad():
        reference = torch.sigmoid(model(image[None]))[0, 0].numpy()
    with rasterio.open(scene.samples[0].image) as dataset:
        nodata = dataset.read(1) == 0
    assert np.array_equal(mask == 255, nodata)
    assert np.abs(probability[~nodata] - reference[~nodata]).max() < 1e-5
