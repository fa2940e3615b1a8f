"""export_onnx.py: ONNX Runtime matches PyTorch (students and the PSPNet teacher), dynamic batch, metadata."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export_onnx
from conftest import TINY_SIZE, tiny_constants
from lib.checkpoint import load_model

TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def students(tiny_data, tmp_path_factory):
    """best.pt of a tiny PSPMixer and of UnetLight, each trained one epoch on the tiny data."""
    from lib.train.engine import train
    base = tmp_path_factory.mktemp("students")
    specs = {"PSPMixer": {"image_size": TINY_SIZE, "patch": 16, "hidden": 16, "depth": 2, "tokens_mlp": 8,
                          "channels_mlp": 32},
             "UnetLight": {"width": 8}}
    paths = {}
    for name, args in specs.items():
        train(tiny_constants(tiny_data, base / name), name, args)
        paths[name] = base / name / "best.pt"
    return paths


def run_onnx(path, batch: int, seed: int = 1):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(batch, 1, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(seed))
    return x, session.run(None, {"image": x.numpy()})[0]


@pytest.mark.parametrize("name", ["PSPMixer", "UnetLight"])
def test_student_export_matches_pytorch_at_any_batch(students, name, tmp_path, capsys):
    output = tmp_path / f"{name}.onnx"
    result = export_onnx.main([str(students[name]), str(output)])
    assert result["max_abs_diff"] < TOLERANCE
    assert "max abs logit difference" in capsys.readouterr().out
    model, checkpoint = load_model(students[name])
    for batch in (1, 3):
        x, logits = run_onnx(output, batch)
        assert logits.shape == (batch, 1, TINY_SIZE, TINY_SIZE)
        with torch.no_grad():
            reference = model(x).numpy()
        assert np.abs(logits - reference).max() < TOLERANCE
    metadata = {entry.key: entry.value for entry in onnx.load(str(output)).metadata_props}
    assert json.loads(metadata["data"])["normalization"] == checkpoint["data"]["normalization"]
    assert json.loads(metadata["model"])["name"] == name


def test_teacher_export_with_pyramid_pooling(tiny_pspnet, tmp_path):
    """PSPNet pools a 8x8 map to 3x3 and 6x6 cells: not exportable as such, replaced by exact matrices."""
    result = export_onnx.main([str(tiny_pspnet), str(tmp_path / "pspnet.onnx")])
    assert result["max_abs_diff"] < TOLERANCE


def test_fixed_adaptive_pool_equals_torch():
    x = torch.randn(2, 3, 8, 13)
    for size in ((1, 1), (2, 3), (3, 3), (6, 6), (8, 13), (5, 9)):
        pool = export_onnx.FixedAdaptiveAvgPool2d((8, 13), size)
        assert torch.allclose(pool(x), torch.nn.functional.adaptive_avg_pool2d(x, size), atol=1e-6)


def test_parity_failure_exits_non_zero(students, tmp_path):
    with pytest.raises(SystemExit) as error:
        export_onnx.main([str(students["UnetLight"]), str(tmp_path / "u.onnx"), "--tolerance", "-1"])
    assert error.value.code == 1
