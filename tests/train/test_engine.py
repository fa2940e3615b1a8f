import csv
import json
import warnings

import pytest
import torch

from conftest import REAL_DATA, tiny_constants
from lib.checkpoint import load_model, read_checkpoint
from lib.train.engine import train
from lib.errors import CheckpointError
from lib.runtime import cpu_has_native_bf16


@pytest.fixture(scope="module")
def one_epoch_run(tiny_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("engine") / "unetlight"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(tiny_constants(tiny_data, output, EPOCHS=2), "UnetLight", {"width": 8})
    return output, summary, caught


def test_one_epoch_writes_every_output(one_epoch_run):
    output, summary, _ = one_epoch_run
    for name in ("best.pt", "last.pt", "history.csv", "summary.json", "curves.png"):
        assert (output / name).is_file(), name
    rows = list(csv.DictReader(open(output / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("lr", "train_loss", "val_loss", "val_iou_VV", "val_iou_VH", "val_f1_VV", "val_precision_VH",
                "val_recall_VV", "val_accuracy_VH", "val_iou"):
        assert key in rows[0]
    saved = json.loads((output / "summary.json").read_text())
    for key in ("best_epoch", "val_iou_VV", "val_iou_VH", "val_iou", "parameters", "constants", "data",
                "wall_time_s", "versions", "encoder_weights"):
        assert key in saved, key
    assert saved["parameters"]["held"] == sum(p.numel() for p in load_model(output / "best.pt")[0].parameters())
    assert saved == summary


def test_checkpoint_rebuilds_the_model_without_the_script(one_epoch_run):
    output, _, _ = one_epoch_run
    model, checkpoint = load_model(output / "best.pt")
    assert checkpoint["model"] == {"name": "UnetLight", "args": {"width": 8}}
    assert checkpoint["data"]["val_bands"] == ["VV", "VH"] and checkpoint["data"]["image_size"] == 64
    assert checkpoint["data"]["normalization"]["VV"] == [-30.0, 5.0]  # NORMALIZATION="sar" (lib/data/bands.py)
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    last = read_checkpoint(output / "last.pt")
    assert {"optimizer", "plateau", "scaler", "progress", "rng"} <= set(last["training_state"])
    assert last["epoch"] == 2


def test_cpu_run_emits_no_amp_warnings(one_epoch_run):
    _, summary, caught = one_epoch_run
    assert summary["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")  # autocast on CPU only with native bf16
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "amp" in m.lower() or "autocast" in m.lower() or "GradScaler" in m], messages


def test_resume_continues_at_the_next_epoch(tiny_data, tmp_path):
    c = tiny_constants(tiny_data, tmp_path / "run", EPOCHS=1)
    train(c, "MLP_256", {"widths": [8]})
    summary = train({**c, "EPOCHS": 2, "RESUME": True}, "MLP_256", {"widths": [8]})
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert summary["epochs_run"] == 2


def test_resume_without_last_checkpoint_is_an_error(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="RESUME=1 but .*last.pt does not exist"):
        train(tiny_constants(tiny_data, tmp_path / "none", RESUME=True), "MLP_256", {})


def test_pspnet_optimizer_holds_only_used_parameters(tiny_data, tmp_path):
    summary = train(tiny_constants(tiny_data, tmp_path / "psp"), "PSPNet", {"encoder_depth": 3})
    assert summary["parameters_trained"] == summary["parameters"]["used"] < summary["parameters"]["held"]
    state = read_checkpoint(tmp_path / "psp" / "last.pt")["training_state"]["optimizer"]
    n_tensors = sum(len(group["params"]) for group in state["param_groups"])
    model, _ = load_model(tmp_path / "psp" / "best.pt")
    assert n_tensors < len(list(model.parameters()))


def test_offline_imagenet_weights_fall_back_quickly(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary = train(tiny_constants(tiny_data, tmp_path / "w", ENCODER_WEIGHTS="imagenet"), "PSPNet", {})
    assert summary["encoder_weights"].startswith("none (imagenet requested but unavailable")


def test_local_encoder_weights_file_loads_and_bad_keys_are_named(tiny_data, tmp_path):
    from lib.models.factory import build_model
    good = tmp_path / "encoder.pt"
    torch.save(build_model("PSPNet").encoder.state_dict(), good)
    summary = train(tiny_constants(tiny_data, tmp_path / "ok", ENCODER_WEIGHTS=str(good)), "PSPNet", {})
    assert summary["encoder_weights"] == str(good)
    bad = tmp_path / "bad.pt"
    torch.save({"not_a_layer.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pt: encoder weights do not fit.*not_a_layer.weight"):
        train(tiny_constants(tiny_data, tmp_path / "bad", ENCODER_WEIGHTS=str(bad)), "PSPNet", {})


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real Sen1Floods11 chip not present in ../shared")
def test_trains_one_step_on_the_real_chip(tmp_path):
    c = tiny_constants(REAL_DATA, tmp_path / "real", IMAGE_SIZE=256, BATCH_SIZE=2)
    summary = train(c, "UnetLight", {"width": 4})
    assert summary["data"]["train_patches"] == 2 and summary["data"]["val_items"] == 4
    assert 0.0 <= summary["val_iou_VV"] <= 1.0


def test_rgb_encoder_weights_are_summed_into_the_single_input_channel(tmp_path):
    import segmentation_models_pytorch as smp

    from lib.train.encoder_weights import load_encoder_weights
    from lib.models.factory import build_model
    rgb = smp.encoders.get_encoder("mobilenet_v2", weights=None).state_dict()  # as ImageNet weights come
    torch.save(rgb, tmp_path / "rgb.pt")
    model = build_model("PSPNet")
    assert load_encoder_weights(model, str(tmp_path / "rgb.pt")) == str(tmp_path / "rgb.pt")
    assert torch.equal(model.encoder.state_dict()["features.0.0.weight"], rgb["features.0.0.weight"].sum(1, keepdim=True))


def test_one_optimizer_step_warms_up_linearly_then_keeps_the_lr():
    from lib.train.step import Optimization, SupervisedObjective, optimizer_step
    from lib.train.loss import FocalTverskyLoss
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    optimization = Optimization(torch.optim.AdamW(model.parameters(), lr=1.0), torch.amp.GradScaler("cpu", enabled=False),
                                "fp32", lr=0.4, warmup_steps=4)
    images, targets = torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).to(torch.uint8)
    before = model.weight.detach().clone()
    lrs = []
    for step in range(6):
        loss, extras = optimizer_step(model, SupervisedObjective(FocalTverskyLoss()), images, targets, optimization, step)
        lrs.append(optimization.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4]) and extras == {} and loss.requires_grad
    assert not torch.equal(model.weight, before)  # the step was taken


def test_training_the_speed_benchmark_and_the_kd_cost_share_the_one_step(monkeypatch, tiny_data, tmp_path):
    """lib.train.step.optimizer_step is the step of the engine, of lib.bench.speed.train_step and of lib_kd's cost measurement."""
    import lib.train.engine
    import lib.models.factory
    import lib.bench.speed
    import lib.train.step
    import lib_kd.speed_kd
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return lib.train.step.optimizer_step(*args, **kwargs)

    for module in (lib.train.engine, lib.bench.speed, lib_kd.speed_kd):
        monkeypatch.setattr(module, "optimizer_step", counted)
    train(tiny_constants(tiny_data, tmp_path / "run"), "MLP_256", {"widths": [4]})
    assert len(calls) == 2  # 8 patches, batch 4
    lib.bench.speed.train_step(lib.models.factory.build_model("MLP_256", {"widths": [4]}), "fp32 eager", 2, 64, torch.device("cpu"))()
    assert len(calls) == 3
    conv = torch.nn.Conv2d(1, 1, 1)
    batches = [(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), None)]
    optimization = lib.train.step.Optimization(torch.optim.SGD(conv.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False))
    objective = lib.train.step.SupervisedObjective(lib.train.loss.supervised_loss({}))
    lib_kd.speed_kd.train_epoch(conv, objective, batches, optimization, torch.contiguous_format)
    assert len(calls) == 4
