"""Speed switches (PRECISION, CHANNELS_LAST, COMPILE): each can be switched off, and outputs agree."""
import json

import pytest
import torch
import torch.nn.functional as F

import lib.runtime
from conftest import TINY_SIZE, tiny_constants
from lib.models.psp_mixer import BilinearUpsample
from lib.train.engine import train
from lib.models.factory import build_model
from lib.runtime import autocast, speed_settings
from lib.errors import ConfigError

CPU = torch.device("cpu")
TINY_MODELS = {"Unet": {}, "PSPNet": {}, "MLP_256": {}, "UnetLight": {},
               "PSPMixer": {"image_size": TINY_SIZE, "patch": 16, "hidden": 16, "depth": 2}}


def test_auto_settings_and_switching_each_off(monkeypatch):
    monkeypatch.setattr(lib.runtime, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert speed_settings({}, CPU) == {"precision": "bf16", "channels_last": True, "compile": False}
    monkeypatch.setattr(lib.runtime, "cpu_flags", lambda: {"avx2", "avx512f"})  # bf16 only emulated: keep fp32
    assert speed_settings({}, CPU)["precision"] == "fp32"
    off = speed_settings({"PRECISION": "fp32", "CHANNELS_LAST": "0", "COMPILE": False}, CPU)
    assert off == {"precision": "fp32", "channels_last": False, "compile": False}
    assert speed_settings({"CHANNELS_LAST": 0, "COMPILE": "1"}, CPU)["compile"] is True
    with pytest.raises(ConfigError, match="COMPILE"):
        speed_settings({"COMPILE": "maybe"}, CPU)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_channels_last_and_bf16_agree_with_float32(name):
    torch.manual_seed(0)
    model = build_model(name, TINY_MODELS[name]).eval()
    images = torch.rand(2, 1, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        reference = model(images)
        model.to(memory_format=torch.channels_last)
        fast = model(images.contiguous(memory_format=torch.channels_last))
        with autocast(CPU, "bf16"):
            half = model(images.contiguous(memory_format=torch.channels_last)).float()
    assert torch.allclose(fast, reference, atol=1e-4, rtol=1e-4)
    probabilities = torch.sigmoid(reference)
    assert (torch.sigmoid(half) - probabilities).abs().mean() < 0.02  # bf16 keeps 8 bits of mantissa
    assert (half - reference).abs().mean() < 0.05 * reference.abs().mean() + 0.01
    confident = (probabilities - 0.5).abs() > 0.05  # where the decision is not a coin toss, it is the same
    if confident.any():
        assert ((half > 0) == (reference > 0))[confident].float().mean() > 0.98


def test_matmul_upsampling_equals_bilinear_interpolation():
    maps = torch.randn(3, 2, 8, 8)
    for scale in (2, 16, 32):
        expected = F.interpolate(maps, scale_factor=scale, mode="bilinear", align_corners=False)
        assert torch.allclose(BilinearUpsample(8, scale)(maps), expected, atol=1e-5)


def test_engine_runs_with_everything_off_and_records_it(tiny_data, tmp_path):
    args = {"width": 4}
    off = train(tiny_constants(tiny_data, tmp_path / "off", PRECISION="fp32", CHANNELS_LAST=False, COMPILE=False),
                "UnetLight", args)
    on = train(tiny_constants(tiny_data, tmp_path / "on", PRECISION="bf16", CHANNELS_LAST=True), "UnetLight", args)
    assert (off["precision"], off["channels_last"], off["compile"]) == ("fp32", False, False)
    assert (on["precision"], on["channels_last"], on["compile"]) == ("bf16", True, False)
    recorded = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert recorded["precision"] == "fp32" and recorded["channels_last"] is False
    # the same first epoch from the same weights: losses and metrics agree within bf16 rounding
    assert on["val_loss"] == pytest.approx(off["val_loss"], abs=0.02)
    assert on["val_iou"] == pytest.approx(off["val_iou"], abs=0.05)


def test_compiled_training_matches_eager(tiny_data, tmp_path):
    args = {"widths": [4]}
    eager = train(tiny_constants(tiny_data, tmp_path / "eager", PRECISION="fp32", COMPILE=False), "MLP_256", args)
    compiled = train(tiny_constants(tiny_data, tmp_path / "compiled", PRECISION="fp32", COMPILE=True), "MLP_256", args)
    assert compiled["compile"] is True
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-3)
    assert compiled["val_iou"] == pytest.approx(eager["val_iou"], abs=1e-3)


def test_speed_benchmark_quick(tmp_path):
    import benchmark
    output = tmp_path / "speed.md"
    result = benchmark.main(["--train", "--quick", "--no-compile", "--models", "UnetLight", "PSPMixer",
                             "--output", str(output)])
    assert result["peaks"]["fp32"] > 0 and result["peaks"]["bf16"] > 0
    assert result["peaks"]["fp32"] == max(result["peaks"]["matmul fp32"], result["peaks"]["conv fp32"])
    rows = {row["label"]: row for row in result["rows"]}
    for label in ("UnetLight", "PSPMixer"):
        assert "error" not in rows[label], rows[label]
        assert set(rows[label]["train"]) == {"fp32 eager", "bf16 + channels_last"}
        assert all(rate > 0 for rate in rows[label]["train"].values())
    assert "int8 dynamic (Linear)" in rows["PSPMixer"]["infer_batch"]  # PSPMixer has Linear layers
    assert all(0 < share < 1 for share in rows["UnetLight"]["accelerated_share"].values())
    assert result["pipeline"]["data_rate"] > 0
    text = output.read_text()
    assert "| UnetLight |" in text and "Hardware limit" in text and "Data pipeline" in text
    assert "Where the time goes" in text


def test_accelerated_share_tells_arithmetic_from_memory_traffic():
    from lib.bench.speed import accelerated_share
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    x = torch.randn(1 << 20)
    assert accelerated_share(lambda: torch.mm(a, b)) > 0.9
    assert accelerated_share(lambda: torch.sigmoid(x) * x) < 0.1


def test_kd_cost_times_student_teacher_and_distillation(tiny_pspnet, tiny_data):
    import benchmark
    result = benchmark.main(["--kd", f"TEACHER_CHECKPOINT={tiny_pspnet}", f"DATA_ROOT={tiny_data}", "PATCH=16",
                             "HIDDEN=16", "TOKENS_MLP=16", "CHANNELS_MLP=32", "BATCH_SIZE=4", "DEVICE=cpu",
                             "NUM_WORKERS=0"])
    assert all(result[phase] > 0 for phase in ("student alone", "teacher forward", "distillation"))
    assert result["ratio"] == pytest.approx(
        result["distillation"] / (result["student alone"] + result["teacher forward"]))
    assert result["samples"] == 8  # the tiny training split, its own data settings taken from the teacher
    assert result["methods"] == "response"


def test_kd_cost_times_the_added_methods(tiny_pspnet, tiny_data, capsys):
    """--kd KD_FEATURE=1 KD_CWD=0.5 times the objective kd.py would train, adapter included, not response only."""
    import benchmark
    result = benchmark.main(["--kd", f"TEACHER_CHECKPOINT={tiny_pspnet}", f"DATA_ROOT={tiny_data}", "PATCH=16",
                             "HIDDEN=16", "TOKENS_MLP=16", "CHANNELS_MLP=32", "BATCH_SIZE=4", "DEVICE=cpu",
                             "NUM_WORKERS=0", "KD_FEATURE=1", "KD_CWD=0.5"])
    assert result["methods"] == "response + feature 1 + cwd 0.5"
    assert "distillation response + feature 1 + cwd 0.5" in capsys.readouterr().out
    assert result["distillation"] > 0


def test_kd_defaults_of_lib_kd_are_kd_py_constants():
    """benchmark.py --kd reads kd.py's constants from lib_kd (a tool never imports a script): the two agree."""
    import kd
    from lib.config import script_constants
    from lib_kd.constants import kd_constants
    script, library = script_constants(vars(kd)), kd_constants()
    differing = {name: (script.get(name, "missing"), library.get(name, "missing"))
                 for name in {*script, *library} if script.get(name, "missing") != library.get(name, "missing")}
    assert not differing, f"kd.py vs lib_kd/constants.py: {differing}"
    assert list(script) == list(library)  # and in the same order (the --help listing)
