"""The refined, int8-friendly PSPMixer (refine=W, activation="relu", norm="batch") through export_onnx.py:
float export equal to PyTorch (the batch norms folded away), int8 export close to float, and no operator
left in float but the layout ones."""
from __future__ import annotations

import onnx
import pytest
import torch

import export_onnx
from conftest import TINY_SIZE, tiny_constants
from lib.bench.onnx_model import load_model_any
from lib.bench.quantize import float_operators

pytestmark = pytest.mark.usefixtures("one_thread")

PIXEL_AGREEMENT = 0.98  # as tests/bench/test_int8.py
IOU_TOLERANCE = 0.02
ARGS = {"image_size": TINY_SIZE, "patch": 16, "hidden": 16, "depth": 2, "tokens_mlp": 8, "channels_mlp": 32,
        "refine": 8, "activation": "relu", "norm": "batch"}


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    """The student trained 2 epochs on the tiny data, exported float and int8 (16 calibration patches)."""
    from lib.train.engine import train
    output = tmp_path_factory.mktemp("int8_students") / "pspmixer"
    train(tiny_constants(tiny_data, output, EPOCHS=2), "PSPMixer", ARGS)
    checkpoint = output / "best.pt"
    result = export_onnx.main([str(checkpoint), "--int8", "--calibration", "16", "--data-root", str(tiny_data),
                               "--cpu-time"])
    return checkpoint, result


def test_float_export_has_no_norm_and_matches_pytorch(exported):
    checkpoint, result = exported
    assert result["max_abs_diff"] < export_onnx.TOLERANCE
    ops = {node.op_type for node in onnx.load(str(checkpoint.with_suffix(".onnx"))).graph.node}
    assert not ops & {"LayerNormalization", "BatchNormalization", "Erf", "ReduceMean"}
    assert "Conv" in ops and "MatMul" in ops


def test_int8_parity_and_nothing_left_in_float(exported):
    checkpoint, result = exported
    assert abs(result["int8"]["iou_drop"]) <= IOU_TOLERANCE
    assert result["int8"]["timing"] == "1 thread, CPU time" and result["int8"]["int8"]["images_per_s_b32"] > 0
    assert not set(float_operators(checkpoint.with_name("best.int8.onnx"))) & {"Erf", "Div", "LayerNormalization"}
    float_model, _ = load_model_any(checkpoint.with_suffix(".onnx"))
    int8_model, _ = load_model_any(checkpoint.with_name("best.int8.onnx"))
    images = torch.rand(4, 1, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(0))
    a, b = float_model(images), int8_model(images)
    assert a.shape == b.shape == (4, 1, TINY_SIZE, TINY_SIZE)
    assert ((a >= 0) == (b >= 0)).float().mean() >= PIXEL_AGREEMENT
