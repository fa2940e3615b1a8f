"""Recall of water by 2 dB backscatter bin (lib/train/recall_bins.py, printed by evaluate.py): a model that
misses the brighter water shows it in the bins, beside the threshold that finds it."""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from conftest import RANGES
from lib.data.bands import normalize
from lib.data.dataset import BandPatchDataset
from lib.train.baseline import Threshold
from lib.train.recall_bins import format_bins, recall_by_bin


class DarkOnly(nn.Module):
    """Water where the (normalized) input is below the level of `db` dB: a model that misses brighter water."""

    def __init__(self, db: float):
        super().__init__()
        self.cut = float(normalize(np.array([db]), "VV", RANGES)[0][0])

    def forward(self, x):
        return (self.cut - x) * 100


def split(tmp_path):
    """One 8 x 8 patch: water at -21 dB (rows 0-1) and -17 dB (rows 2-3, bright water), land at -8 dB below;
    one water pixel without a value (NaN) is no-data."""
    for folder in ("img", "lab"):
        (tmp_path / "val" / folder).mkdir(parents=True)
    image = np.full((8, 8), -8.0, np.float32)
    image[:2], image[2:4] = -21.0, -17.0
    image[0, 0] = np.nan
    label = np.zeros((8, 8), np.uint8)
    label[:4] = 1
    np.save(tmp_path / "val" / "img" / "a_r0c0_VV.npy", image)
    np.save(tmp_path / "val" / "lab" / "a_r0c0.npy", label)
    return BandPatchDataset(tmp_path, "val", ["VV"], train=False, ranges=RANGES, image_size=None, preload=False)


def test_bins_show_where_the_model_misses_water(tmp_path):
    dataset = split(tmp_path)
    thresholds = {"VV": (Threshold(-15.0, True), 1.0)}
    bins = recall_by_bin(DarkOnly(-19.0), dataset, ["VV"], thresholds, torch.device("cpu"))
    rows = {row["low"]: row for row in bins["VV"]}
    assert sorted(rows) == [-22.0, -18.0]                     # -21 dB in [-22, -20), -17 dB in [-18, -16)
    assert rows[-22.0]["water"] == 15 and rows[-18.0]["water"] == 16     # the NaN pixel is left out
    assert rows[-22.0]["model"] == 1.0 and rows[-18.0]["model"] == 0.0
    assert rows[-22.0]["threshold"] == 1.0 and rows[-18.0]["threshold"] == 1.0
    text = format_bins("run/best.pt", bins, {"VV": "VV < -15.0 dB"})
    assert "recall of water by VV bin (2 dB), model vs threshold VV < -15.0 dB" in text
    assert "-18 ..  -16 dB   51.6% of water  model 0.00  threshold 1.00" in text


def test_without_threshold_and_for_bands_not_in_db(tmp_path):
    dataset = split(tmp_path)
    bins = recall_by_bin(DarkOnly(-19.0), dataset, ["VV"], None, torch.device("cpu"))
    assert bins["VV"][0]["threshold"] is None and "threshold" not in format_bins("m", bins).splitlines()[1]
    assert recall_by_bin(DarkOnly(-19.0), dataset, ["NDWI"], None, torch.device("cpu")) == {}


def test_evaluate_prints_and_stores_the_bins(tiny_pspnet, tiny_data, tmp_path, capsys):
    import evaluate
    evaluate.main([str(tiny_pspnet), "--data-root", str(tiny_data), "--out", str(tmp_path), "--device", "cpu",
                   "--workers", "0"])
    err = capsys.readouterr().err
    assert "recall of water by VV bin (2 dB), model vs threshold VV <" in err and "by VH bin" in err
    stored = json.loads((tmp_path / "evaluation.json").read_text())["results"][0]["recall_by_bin"]
    assert set(stored) == {"VV", "VH"} and abs(sum(row["share"] for row in stored["VH"]) - 1) < 1e-9
    evaluate.main([str(tiny_pspnet), "--data-root", str(tiny_data), "--out", str(tmp_path), "--device", "cpu",
                   "--workers", "0", "--no-recall-bins"])
    assert "recall of water" not in capsys.readouterr().err


def test_evaluate_bins_its_scoring_pass(tiny_pspnet, tiny_data, tmp_path, monkeypatch, capsys):
    """The bins come from the pass that scored the model (one forward pass per validation batch, not two),
    and equal those of a pass of their own."""
    import evaluate
    from lib.bench.scoring import checkpoint_split
    from lib.bench.onnx_model import load_model_any
    calls = []

    def counted(path, device):
        model, checkpoint = load_model_any(path, device)
        model.register_forward_hook(lambda *_: calls.append(1))
        return model, checkpoint
    monkeypatch.setattr(evaluate, "load_model_any", counted)
    result = evaluate.main([str(tiny_pspnet), "--data-root", str(tiny_data), "--out", str(tmp_path), "--device", "cpu",
                            "--workers", "0", "--no-baselines", "--batch-size", "4", "--precision", "fp32"])
    model, checkpoint = load_model_any(tiny_pspnet, "cpu")
    dataset, bands = checkpoint_split(checkpoint, tiny_data, "val", None)
    assert len(calls) == -(-len(dataset) // 4)
    assert result["results"][0]["recall_by_bin"] == recall_by_bin(model.eval(), dataset, bands, None,
                                                                  torch.device("cpu"), batch_size=4)
