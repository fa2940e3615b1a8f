import numpy as np
import torch

from lib.data.labels import IGNORE_INDEX
from lib.train.metrics import BandConfusion


def test_dataset_wide_counts_per_band_match_hand_computation():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, (6, 1, 16, 16)).astype(np.uint8)
    target[0, 0, :4] = IGNORE_INDEX
    logits = rng.normal(size=(6, 1, 16, 16)).astype(np.float32)
    bands = np.array([0, 1, 0, 1, 1, 0])
    confusion = BandConfusion(["VV", "VH"])
    for start in (0, 2, 4):  # several batches: counts are summed, not averaged per batch
        part = slice(start, start + 2)
        confusion.update(torch.from_numpy(logits[part]), torch.from_numpy(target[part]), torch.from_numpy(bands[part]))
    result = confusion.compute()
    for band_index, band in enumerate(["VV", "VH"]):
        sel = bands == band_index
        t, p = target[sel], logits[sel] >= 0
        valid = t != IGNORE_INDEX
        tp = np.sum(p & (t == 1) & valid); fp = np.sum(p & (t == 0) & valid)
        fn = np.sum(~p & (t == 1) & valid); tn = np.sum(~p & (t == 0) & valid)
        assert np.isclose(result[f"iou_{band}"], tp / (tp + fp + fn))
        assert np.isclose(result[f"f1_{band}"], 2 * tp / (2 * tp + fp + fn))
        assert np.isclose(result[f"precision_{band}"], tp / (tp + fp))
        assert np.isclose(result[f"recall_{band}"], tp / (tp + fn))
        assert np.isclose(result[f"accuracy_{band}"], (tp + tn) / (tp + fp + fn + tn))
        assert confusion.counts[band_index].tolist() == [tp, fp, fn, tn]
    assert np.isclose(result["iou"], (result["iou_VV"] + result["iou_VH"]) / 2)


def test_empty_ratio_counts_as_one():
    confusion = BandConfusion(["VV"])
    confusion.update(torch.full((1, 1, 4, 4), -5.0), torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.tensor([0]))
    result = confusion.compute()
    assert result["iou"] == 1.0 and result["accuracy"] == 1.0
