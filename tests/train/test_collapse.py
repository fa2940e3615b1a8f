"""The constant-answer detector (lib/train/collapse.py): one line, with what to try, when the validation
prediction stays all water or all land; silent for a model that answers from its input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lib.train.engine as engine
from conftest import tiny_constants
from lib.train.collapse import CONSTANT_EPOCHS, answer, constant_answer_line
from lib.train.metrics import metrics_from_counts

pytestmark = pytest.mark.usefixtures("one_thread")


def row(counts, bands=("VV", "VH")) -> dict:
    """A history row whose every band has these (tp, fp, fn, tn)."""
    found = metrics_from_counts(torch.tensor(counts))
    return {f"val_{name}_{band}": value for band in bands for name, value in found.items()}


ALL_WATER, ALL_LAND, LEARNING = [20, 80, 0, 0], [0, 0, 20, 80], [15, 5, 5, 75]


@pytest.mark.parametrize("counts, expected", [
    (ALL_WATER, "all water"), (ALL_LAND, "all land"), ([20, 79, 0, 1], "all water"),   # 99 % water: constant
    (LEARNING, None), ([0, 0, 0, 100], None),     # all land on dry data is right, not a collapse
    ([0, 100, 0, 0], "all water"),                # all water on dry data
])
def test_answer_from_metrics(counts, expected):
    assert answer(row(counts), "VV") == expected


def test_one_line_per_streak():
    history = [row(LEARNING)] + [row(ALL_WATER)] * (CONSTANT_EPOCHS - 1)
    assert constant_answer_line(history, ("VV", "VH")) is None             # not yet long enough
    history.append(row(ALL_WATER))
    line = constant_answer_line(history, ("VV", "VH"))
    assert line.startswith("constant answer: the validation prediction has been all water") and "BCE_WEIGHT" in line
    assert "\n" not in line
    assert constant_answer_line(history + [row(ALL_WATER)], ("VV", "VH")) is None   # said once
    mixed = [row(ALL_WATER)] * CONSTANT_EPOCHS
    mixed[-1] = {**row(ALL_WATER, ("VV",)), **row(LEARNING, ("VH",))}
    assert constant_answer_line(mixed, ("VV", "VH")) is None                # one band learns: not constant


class Forced(nn.Module):
    """A 1x1 convolution fixed to `weight`, `bias`: a constant (weight 0) or a threshold on the input."""

    def __init__(self, weight: float, bias: float):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return self.conv(x) * 0 + self.weight * x + self.bias   # the conv's parameters train, the answer does not


@pytest.mark.parametrize("weight, bias, fires", [(0.0, 5.0, True), (-40.0, 18.0, False)])
def test_engine_says_so_once(tiny_data, tmp_path, monkeypatch, capsys, weight, bias, fires):
    monkeypatch.setattr(engine, "build_model", lambda name, args: Forced(weight, bias))
    epochs = CONSTANT_EPOCHS + 1
    engine.train(tiny_constants(tiny_data, tmp_path / "run", EPOCHS=epochs, PATIENCE=epochs,
                                TRAIN_BANDS=("VV", "VH")), "UnetLight", {"width": 4})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("constant answer")]
    assert len(lines) == (1 if fires else 0)
    if fires:
        assert "all water" in lines[0]
