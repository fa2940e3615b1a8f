"""Distillation methods added to the response term (lib_kd/losses.py, lib_kd/features.py, kd.py KD_*):
hand-computed losses, feature taps, adapters that train, resume, kd.py end to end with each method, the
temperature sweep and the cost/baseline columns of the final table."""
import json
import math
import sys

import pytest
import torch

from conftest import TINY_SIZE
from lib.checkpoint import read_checkpoint
from lib.errors import ConfigError
from lib.train.loss import FocalTverskyLoss
from lib.models.factory import build_model
from lib_kd.features import FeatureTap, probe
from lib_kd.losses import affinity_loss, channel_wise_loss, feature_loss, match_resolution
from lib_kd.model_kd import load_teacher, student_args
from lib_kd.comparison import comparison_table
from lib_kd.objective import DistillationLoss, FeaturePair, KDMethods, KDObjective
from lib_kd.training_kd import distill, sweep_values
from test_kd import TINY_CLI, count_teacher_reads, kd_constants

pytestmark = pytest.mark.usefixtures("one_thread")


def column(values):
    """[1, C, 1, N] map from a list of N channel vectors (positions along the width)."""
    return torch.tensor(values, dtype=torch.float32).T[None, :, None, :]


# ---------------------------------------------------------------------------------- hand-computed losses

def test_feature_mse_is_relative_to_the_teacher_energy():
    student, teacher = column([[1.0, 2.0]]), column([[1.0, 4.0]])
    # ((1-1)^2 + (2-4)^2) / 2 over the teacher's mean square (1 + 16) / 2
    assert feature_loss(student, teacher, "mse").item() == pytest.approx(2.0 / 8.5)
    assert feature_loss(teacher, teacher, "mse").item() == 0.0
    assert feature_loss(torch.zeros_like(teacher), teacher, "mse").item() == pytest.approx(1.0)


def test_feature_cosine_by_hand():
    student, teacher = column([[1.0, 2.0], [3.0, 0.0]]), column([[1.0, 4.0], [-1.0, 0.0]])
    first = 1 - (1 + 8) / (math.sqrt(5) * math.sqrt(17))
    second = 1 - (-1.0)  # opposite vectors
    assert feature_loss(student, teacher, "cosine").item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert feature_loss(2 * teacher, teacher, "cosine").item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    with pytest.raises(ValueError, match="mse, cosine"):
        feature_loss(student, teacher, "l1")


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_channel_wise_kl_by_hand(temperature):
    # teacher softmax over the two positions: (3/4, 1/4) at any T; student: (1/2, 1/2)
    teacher = column([[temperature * math.log(3)], [0.0]])
    student = column([[5.0], [5.0]])
    expected = temperature ** 2 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert channel_wise_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-6)
    assert channel_wise_loss(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-7)


def test_channel_wise_leaves_out_no_data_positions():
    teacher = column([[math.log(3)], [0.0], [50.0]])
    student = column([[0.0], [0.0], [-50.0]]).requires_grad_(True)
    valid = column([[1.0], [1.0], [0.0]]).bool()
    loss = channel_wise_loss(student, teacher, 1.0, valid)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[..., 2].abs().max() == 0
    none_valid = channel_wise_loss(student, teacher, 1.0, torch.zeros_like(valid))
    assert none_valid.item() == 0.0


def test_affinity_by_hand():
    # student positions orthogonal (affinity I), teacher positions parallel (affinity all ones):
    # the two off-diagonal pairs differ by 1, the diagonal by 0 -> mean of squares 2 / 4
    student, teacher = column([[1.0, 0.0], [0.0, 1.0]]), column([[1.0, 0.0], [2.0, 0.0]])
    assert affinity_loss(student, teacher, grid=8).item() == pytest.approx(0.5)
    assert affinity_loss(teacher, teacher, grid=8).item() == pytest.approx(0.0, abs=1e-6)
    # channel counts may differ; the maps are pooled to a common grid
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 7, 4, 4)
    assert affinity_loss(s, t, grid=2).shape == ()


def test_the_finer_map_is_pooled_to_the_coarser():
    fine, coarse = torch.arange(16.0).reshape(1, 1, 4, 4), torch.zeros(1, 2, 2, 2)
    a, b = match_resolution(fine, coarse)
    assert a.shape == (1, 1, 2, 2) and b is coarse
    assert a[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    b, a = match_resolution(coarse, fine)
    assert a.shape == (1, 1, 2, 2)


# -------------------------------------------------------------------------------------------- features

@pytest.mark.parametrize("name, args, channels, side", [
    ("PSPMixer", {"image_size": 32, "patch": 8, "hidden": 12, "depth": 1}, 12, 4),  # the token grid
    ("UnetLight", {"width": 4}, 4, 32),
    ("MLP_256", {"widths": (8, 4)}, 4, 32),
    ("PSPNet", {"encoder_depth": 3}, 512, 4),
    ("UNet_Classic", {"base_channels": 4}, 4, 32),
    ("DeepUNet", {"width": 4, "hidden": 4}, 4, 128),  # padded inside to a multiple of 128
    ("FCN_VGG16", {"base_channels": 4, "fc_width": 8}, 8, 1),
])
def test_every_architecture_has_a_default_feature_map(name, args, channels, side):
    from lib_kd.features import default_layer
    model = build_model(name, args)
    shape = probe(model, default_layer(name, model), "KD_FEATURE_STUDENT_LAYER", 32)
    assert (shape.channels, shape.height, shape.width) == (channels, side, side)


def test_a_wrong_layer_name_is_a_clear_error():
    model = build_model("UnetLight", {"width": 4})
    with pytest.raises(ConfigError, match="KD_FEATURE_STUDENT_LAYER='nope'.*bottleneck"):
        FeatureTap(model, "nope", "KD_FEATURE_STUDENT_LAYER")
    with pytest.raises(ConfigError, match="not a spatial map"):  # a module whose output is not [B, C, H, W]
        probe(build_model("PSPMixer", {"image_size": 32, "patch": 8, "hidden": 8, "depth": 1}), "norm", "X", 32)


def test_tap_records_only_while_active():
    model = build_model("UnetLight", {"width": 4})
    tap = FeatureTap(model, "bottleneck", "KD_FEATURE_STUDENT_LAYER")
    model(torch.zeros(1, 1, 8, 8))
    assert tap.value is None
    tap.active = True
    model(torch.zeros(1, 1, 8, 8))
    assert tap.take().shape == (1, 8, 4, 4) and tap.value is None


def tiny_pair(methods, teacher_name="UnetLight", teacher_args=None):
    torch.manual_seed(1)  # the same teacher every time
    teacher = build_model(teacher_name, teacher_args or {"width": 6}).eval()
    student_spec = ("PSPMixer", {"image_size": 32, "patch": 8, "hidden": 8, "depth": 1})
    pair = FeaturePair(*student_spec, teacher, teacher_name, methods, image_size=32, seed=0)
    objective = KDObjective(teacher, DistillationLoss(FocalTverskyLoss()), methods=methods, features=pair)
    return build_model(*student_spec), teacher, objective


def test_the_adapter_trains_and_the_feature_loss_falls():
    methods = KDMethods(feature=1.0)
    student, teacher, objective = tiny_pair(methods)
    assert objective.columns == ("kd_loss", "sup_loss", "feat_loss")
    adapter_before = objective.trained["adapter"].weight.detach().clone()
    optimizer = torch.optim.Adam([*student.parameters(), *objective.parameters()], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32, generator=g)
    targets = (images > 0.5).to(torch.uint8)
    losses = []
    for _ in range(40):
        loss, extras = objective(student, images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(extras["feat_loss"].item())
    assert not torch.equal(objective.trained["adapter"].weight, adapter_before)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in teacher.parameters())


def test_each_method_adds_its_weighted_term():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    targets = (images > 0.5).to(torch.uint8)
    student, _, plain = tiny_pair(KDMethods())
    base, _ = plain(student, images, targets)
    for methods, column_name in ((KDMethods(feature=2.0), "feat_loss"), (KDMethods(cwd=3.0), "cwd_loss"),
                                 (KDMethods(affinity=0.5), "aff_loss")):
        _, _, objective = tiny_pair(methods)
        loss, extras = objective(student, images, targets)
        weight = methods.feature or methods.cwd or methods.affinity
        assert loss.item() == pytest.approx(base.item() + weight * extras[column_name].item(), rel=1e-5)


def test_methods_are_checked():
    with pytest.raises(ConfigError, match="KD_CWD"):
        KDMethods.from_constants({"KD_CWD": -1.0})
    with pytest.raises(ConfigError, match="KD_FEATURE_LOSS"):
        KDMethods.from_constants({"KD_FEATURE_LOSS": "l1"})
    assert KDMethods.from_constants({"KD_FEATURE": 1.0, "KD_AFFINITY": 0.5}).label() == "response + feature 1 + affinity 0.5"
    assert KDMethods().columns() == ()


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.parametrize("overrides, columns", [
    (["KD_FEATURE=1"], {"feat_loss"}),
    (["KD_FEATURE=1", "KD_FEATURE_LOSS=cosine", "KD_FEATURE_STUDENT_LAYER=blocks", "KD_FEATURE_TEACHER_LAYER=encoder"], None),
    (["KD_CWD=1"], {"cwd_loss"}),
    (["KD_AFFINITY=1"], {"aff_loss"}),
    (["KD_FEATURE=0.5", "KD_CWD=0.5", "KD_AFFINITY=0.5"], {"feat_loss", "cwd_loss", "aff_loss"}),
])
def test_kd_script_with_each_method(tiny_pspnet, tiny_data, tmp_path, monkeypatch, capsys, overrides, columns):
    import kd
    output = tmp_path / "kd"
    monkeypatch.setattr(sys, "argv", ["kd.py", "EPOCHS=1", f"DATA_ROOT={tiny_data}", f"TEACHER_CHECKPOINT={tiny_pspnet}",
                                      f"OUTPUT_DIR={output}", "COST_TABLE=0", *TINY_CLI, *overrides])
    if columns is None:  # "blocks" is the Mixer's token sequence, not a spatial map
        with pytest.raises(ConfigError, match="blocks.*not a spatial map"):
            kd.main()
        return
    kd.main()
    history = (output / "history.csv").read_text().splitlines()
    assert columns <= set(history[0].split(",")) and len(history) == 2
    summary = json.loads((output / "summary.json").read_text())
    assert summary["kd_methods"]["label"].startswith("response + ")
    state = read_checkpoint(output / "last.pt")["training_state"]
    has_adapter = "feat_loss" in columns
    assert ("objective" in state) == has_adapter
    assert (summary["kd_methods"]["adapter_parameters"] > 0) == has_adapter
    best = read_checkpoint(output / "best.pt")
    assert not any(k.startswith("adapter") for k in best["state_dict"])  # best.pt is the plain student
    assert "student PSPMixer distilled" in capsys.readouterr().out


def test_the_adapter_resumes_from_last_pt(tiny_pspnet, tiny_data, tmp_path):
    output = tmp_path / "kd"
    c = kd_constants(tiny_data, output, tiny_pspnet, KD_FEATURE=1.0, EPOCHS=1, COST_TABLE=False)
    distill(c, table=False)
    saved = read_checkpoint(output / "last.pt")["training_state"]
    adapter = saved["objective"]["adapter.weight"]
    assert len(saved["optimizer"]["param_groups"][0]["params"]) == len(saved["optimizer"]["state"])
    with pytest.raises(ConfigError, match="KD_FEATURE: 1.0 -> 2.0"):  # other methods than the run started with
        distill({**c, "RESUME": True, "EPOCHS": 2, "KD_FEATURE": 2.0}, table=False)
    seen = []
    original = KDObjective.load_state_dict
    KDObjective.load_state_dict = lambda self, state: (seen.append(state["adapter.weight"].clone()), original(self, state))[1]
    try:
        summary = distill({**c, "RESUME": True, "EPOCHS": 2}, table=False)
    finally:
        KDObjective.load_state_dict = original
    assert summary["epochs_run"] == 2 and len(seen) == 1 and torch.equal(seen[0], adapter)
    assert not torch.equal(read_checkpoint(output / "last.pt")["training_state"]["objective"]["adapter.weight"], adapter)


def test_temperature_sweep(tiny_pspnet, tiny_data, tmp_path, monkeypatch, capsys):
    import kd
    assert sweep_values(["EPOCHS=1", "KD_TEMPERATURE=1,2.5"], "KD_TEMPERATURE") == (["EPOCHS=1"], [1.0, 2.5])
    assert sweep_values(["KD_TEMPERATURE=2"], "KD_TEMPERATURE") == (["KD_TEMPERATURE=2"], None)
    with pytest.raises(ConfigError, match="KD_TEMPERATURE"):
        sweep_values(["KD_TEMPERATURE=1,x"], "KD_TEMPERATURE")
    output = tmp_path / "kd"
    monkeypatch.setattr(sys, "argv", ["kd.py", "EPOCHS=1", f"DATA_ROOT={tiny_data}", f"TEACHER_CHECKPOINT={tiny_pspnet}",
                                      f"OUTPUT_DIR={output}", "COST_TABLE=0", "KD_TEMPERATURE=1,2", *TINY_CLI])
    reads = count_teacher_reads(monkeypatch, tiny_pspnet)
    kd.main()
    assert len(reads) == 1  # once for the whole sweep (before: twice per run and twice more for the table)
    printed = capsys.readouterr().out
    for t in ("1", "2"):
        summary = json.loads((tmp_path / f"kd_T{t}" / "summary.json").read_text())
        assert summary["constants"]["KD_TEMPERATURE"] == float(t)
        assert f"student PSPMixer T={t} " in printed and f"{summary['val_iou']:.3f}" in printed
    assert printed.count("Distillation: 1 epoch(s)") == 1  # one table


# ----------------------------------------------------------------------------------------- final table

def test_table_has_cost_columns_and_the_baseline_row(tiny_pspnet, tiny_data, tmp_path):
    c = kd_constants(tiny_data, tmp_path / "kd", tiny_pspnet)
    teacher = load_teacher(tiny_pspnet, c)
    summary = {"model": "PSPMixer", "model_args": student_args(c), "val_iou_VV": 0.5, "val_iou_VH": 0.4, "val_iou": 0.45,
               "parameters": {"held": 10, "used": 10}}
    without = comparison_table(c, summary, teacher, {"iou": 0.6}, cost=False)
    assert "baseline" not in without and "GFLOPs" not in without
    summary["baseline"] = {"method": "threshold", "fitted_on": "train", "iou": 0.321,
                           "bands": {"VV": {"threshold": 0.4, "water_below": True, "iou": 0.345},
                                     "VH": {"threshold": 0.3, "water_below": True, "iou": 0.297}}}
    table = comparison_table(c, summary, teacher, {"iou": 0.6}, cost=True)
    lines = table.splitlines()
    assert lines[1].split()[-6:] == ["GFLOPs", "ms", "b1", "ms", "b32", "s/epoch"]
    baseline = next(line for line in lines if line.startswith("threshold baseline (fitted on train)"))
    assert "0.345" in baseline and "0.297" in baseline and "0.321" in baseline
    student_row = next(line for line in lines if line.startswith("student PSPMixer distilled")).split()
    from lib.bench.cost import count_flops
    gflops = count_flops(build_model("PSPMixer", student_args(c)), TINY_SIZE) / 1e9
    assert float(student_row[-4]) == pytest.approx(gflops, rel=1e-2)
    assert float(student_row[-3]) > 0 and float(student_row[-2]) > 0
