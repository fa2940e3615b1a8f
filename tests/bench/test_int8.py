"""int8 students (export_onnx.py --int8, lib/bench/quantize.py) and ONNX models where checkpoints go
(lib/bench/onnx_model.py: evaluate.py, predict.py)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import rasterio
import torch

import evaluate
import export_onnx
import predict
from conftest import TINY_SIZE, tiny_constants
from lib.checkpoint import load_model, read_checkpoint
from lib.errors import CheckpointError
from lib.bench.onnx_model import load_model_any
from lib.bench.scoring import checkpoint_split

pytestmark = pytest.mark.usefixtures("one_thread")

# int8 vs float on the fixture: the masks (logit >= 0) agree on at least this share of pixels and the
# validation IoU moves by at most IOU_TOLERANCE
PIXEL_AGREEMENT = 0.98
IOU_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    """A UnetLight trained 2 epochs on the tiny data, exported float and int8 (16 calibration patches)."""
    from lib.train.engine import train
    base = tmp_path_factory.mktemp("int8")
    train(tiny_constants(tiny_data, base / "unetlight", EPOCHS=2), "UnetLight", {"width": 8})
    checkpoint = base / "unetlight" / "best.pt"
    result = export_onnx.main([str(checkpoint), "--int8", "--calibration", "16", "--data-root", str(tiny_data)])
    return checkpoint, result


def test_int8_file_beside_the_float_model_with_its_metadata(exported):
    checkpoint, result = exported
    int8 = checkpoint.with_name("best.int8.onnx")
    assert result["output"] == str(checkpoint.with_suffix(".onnx")) and result["int8"]["int8_path"] == str(int8)
    proto = onnx.load(str(int8))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata["data"]) == load_model(checkpoint)[1]["data"]
    assert json.loads(metadata["quantization"])["calibration_patches"] == 16


def test_int8_parity_with_float(exported, tiny_data):
    checkpoint, result = exported
    report = result["int8"]
    assert abs(report["iou_drop"]) <= IOU_TOLERANCE
    assert report["float"]["images_per_s_b1"] > 0 and report["int8"]["images_per_s_b32"] > 0
    float_model, _ = load_model_any(checkpoint.with_suffix(".onnx"))
    int8_model, _ = load_model_any(checkpoint.with_name("best.int8.onnx"))
    # the validation patches as the run read them: int8 is calibrated on such data (uniform noise lies outside
    # the calibrated activation ranges, where the comparison says nothing about the model)
    dataset, _ = checkpoint_split(read_checkpoint(checkpoint), tiny_data, "val", None)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    a, b = float_model(images), int8_model(images)
    assert a.shape == b.shape == (len(dataset), 1, TINY_SIZE, TINY_SIZE) and a.dtype == torch.float32
    assert ((a >= 0) == (b >= 0)).float().mean() >= PIXEL_AGREEMENT


def test_evaluate_scores_onnx_files_like_checkpoints(exported, tiny_data, tmp_path):
    checkpoint, _ = exported
    result = evaluate.main([str(checkpoint), str(checkpoint.with_suffix(".onnx")), str(checkpoint.with_name("best.int8.onnx")),
                            "--data-root", str(tiny_data), "--out", str(tmp_path), "--precision", "fp32"])
    pt, float_onnx, int8_onnx = result["results"]
    assert pt["model"] == float_onnx["model"] == int8_onnx["model"] == "UnetLight"
    assert float_onnx["iou"] == pytest.approx(pt["iou"], abs=1e-4)  # the same model through onnxruntime
    assert abs(int8_onnx["iou"] - pt["iou"]) <= IOU_TOLERANCE and pt["items"] == int8_onnx["items"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_predict_maps_a_scene_with_an_onnx_model(exported, tmp_path):
    checkpoint, _ = exported
    scene = np.random.default_rng(0).uniform(-25, 0, (80, 90)).astype(np.float32)
    np.save(tmp_path / "scene.npy", scene)
    outputs = {}
    for label, path in (("pt", checkpoint), ("onnx", checkpoint.with_suffix(".onnx"))):
        predict.main([str(path), str(tmp_path / "scene.npy"), str(tmp_path / f"{label}.tif"), "--no-progress",
                      "--precision", "fp32", "--no-quicklook", "--device", "cpu"])
        with rasterio.open(tmp_path / f"{label}.tif") as raster:
            outputs[label] = raster.read(1)
    assert outputs["onnx"].shape == (80, 90)
    assert (outputs["onnx"] != outputs["pt"]).mean() < 1e-3  # identical up to float rounding at the threshold


def test_onnx_without_metadata_is_a_clear_error(tmp_path):
    path = tmp_path / "bare.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 1, 1), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["image"], output_names=["logits"])
    with pytest.raises(CheckpointError, match="metadata lacks model and data"):
        load_model_any(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx"):
        load_model_any(tmp_path / "junk.onnx")
    with pytest.raises(CheckpointError, match="not found"):
        load_model_any(tmp_path / "missing.onnx")


def test_int8_needs_its_calibration_data(exported, tmp_path):
    checkpoint, _ = exported
    with pytest.raises(Exception, match="does not exist"):
        export_onnx.main([str(checkpoint), str(tmp_path / "m.onnx"), "--int8", "--data-root", str(tmp_path / "nowhere")])
