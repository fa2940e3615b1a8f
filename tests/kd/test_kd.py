"""Knowledge distillation (kd.py, lib_kd): the loss, the frozen teacher, the pairing checks, kd.py end to end."""
import csv
import json
import sys

import pytest
import torch

from conftest import TINY_SIZE, tiny_constants
from lib.checkpoint import load_model, read_checkpoint
from lib.train.engine import SupervisedObjective, train
from lib.train.loss import supervised_loss
from lib.errors import ConfigError
from lib.train.loss import FocalTverskyLoss
from lib.runtime import autocast
from lib_kd.model_kd import TeacherError, full_args, inherit_teacher_data, load_teacher, student_args
from lib_kd.comparison import find_scratch_run
from lib_kd.objective import DistillationLoss, KDObjective
from lib_kd.training_kd import distill

TINY_STUDENT = {"image_size": TINY_SIZE, "patch": 16, "hidden": 16, "depth": 3, "tokens_mlp": 16, "channels_mlp": 32}
TINY_CLI = [f"IMAGE_SIZE={TINY_SIZE}", "PATCH=16", "HIDDEN=16", "TOKENS_MLP=16", "CHANNELS_MLP=32", "NUM_WORKERS=0",
            "DEVICE=cpu", "BATCH_SIZE=4"]


def kd_constants(tiny_data, output, teacher, inherit=True, **overrides):
    """What kd.py's main would pass to distill() for the tiny student; with `inherit`, the data constants
    left None are completed from the teacher, as distill() does first."""
    import kd
    from lib.config import script_constants
    c = {**script_constants(vars(kd)), **tiny_constants(tiny_data, output), "TEACHER_CHECKPOINT": str(teacher),
         "PATCH": 16, "HIDDEN": 16, "TOKENS_MLP": 16, "CHANNELS_MLP": 32}
    c.pop("ENCODER_WEIGHTS")
    c.update(overrides)
    return inherit_teacher_data(c) if inherit else c


def count_teacher_reads(monkeypatch, teacher) -> list:
    """Every read of the teacher checkpoint file from now on (each torch.load of it)."""
    from pathlib import Path
    reads, load = [], torch.load

    def counted(f, *args, **kwargs):
        if isinstance(f, (str, Path)) and Path(f).resolve() == Path(teacher).resolve():
            reads.append(str(f))
        return load(f, *args, **kwargs)
    monkeypatch.setattr(torch, "load", counted)
    return reads


def batch(seed=0, n=2, size=16, nodata=True):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, 1, size, size, generator=g) * 3
    teacher = torch.randn(n, 1, size, size, generator=g) * 3
    targets = (torch.rand(n, 1, size, size, generator=g) > 0.5).to(torch.uint8)
    if nodata:
        targets[:, :, :4] = 255
    return student, teacher, targets


# ---------------------------------------------------------------------------------------------- loss

def test_alpha_zero_is_exactly_the_supervised_loss():
    student, teacher, targets = batch()
    focal = FocalTverskyLoss()
    loss, kd, sup = DistillationLoss(focal, temperature=4.0, alpha=0.0, beta=1.0)(student, teacher, targets)
    assert torch.equal(loss, focal(student, targets)) and torch.equal(sup, loss)
    assert kd > 0 and not kd.requires_grad  # still logged, never added
    half, _, _ = DistillationLoss(focal, temperature=4.0, alpha=0.0, beta=0.5)(student, teacher, targets)
    assert torch.equal(half, 0.5 * focal(student, targets))
    # through the objective the engine calls: same loss as the engine's own supervised objective
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    images = torch.randn(2, 1, 16, 16)
    objective = KDObjective(torch.nn.Conv2d(1, 1, 1), DistillationLoss(focal, alpha=0.0, beta=1.0))
    assert torch.equal(objective(model, images, targets)[0], SupervisedObjective(focal)(model, images, targets)[0])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_term_is_t_squared_times_the_soft_bce(temperature):
    student, teacher, targets = batch(1)
    kd = DistillationLoss(FocalTverskyLoss(), temperature=temperature).kd_term(student, teacher, targets)
    valid = targets != 255
    p = torch.sigmoid(teacher / temperature)[valid]
    q = torch.sigmoid(student / temperature)[valid]
    soft_bce = -(p * torch.log(q) + (1 - p) * torch.log(1 - q)).mean()
    assert kd.item() == pytest.approx(temperature ** 2 * soft_bce.item(), rel=1e-5)


def test_kd_term_is_minimal_where_student_logits_equal_the_teachers():
    _, teacher, targets = batch(2)
    loss = DistillationLoss(FocalTverskyLoss(), temperature=4.0)
    student = teacher.clone().requires_grad_(True)
    at_teacher = loss.kd_term(student, teacher, targets)
    at_teacher.backward()
    assert student.grad.abs().max() < 1e-7  # BCE(p, p) is the entropy, not 0, but its gradient is 0 there
    g = torch.Generator().manual_seed(3)
    for scale in (1e-2, 0.3, 3.0):
        perturbed = teacher + scale * torch.randn(teacher.shape, generator=g)
        assert loss.kd_term(perturbed, teacher, targets) > at_teacher


def test_no_data_pixels_are_ignored():
    student, teacher, targets = batch(4)
    ignored = targets == 255
    assert ignored.any() and (~ignored).any()
    loss = DistillationLoss(FocalTverskyLoss(), temperature=4.0, alpha=0.5, beta=0.5)
    s1 = student.clone().requires_grad_(True)
    total1, kd1, sup1 = loss(s1, teacher, targets)
    total1.backward()
    wild = torch.where(ignored, torch.full_like(student, 1e4), student)  # anything at no-data pixels
    s2 = wild.clone().requires_grad_(True)
    total2, kd2, sup2 = loss(s2, torch.where(ignored, -wild, teacher), targets)
    total2.backward()
    assert torch.equal(kd1, kd2) and torch.equal(sup1, sup2) and torch.equal(total1, total2)
    assert torch.equal(s1.grad, s2.grad) and s1.grad[ignored].abs().max() == 0


def test_all_no_data_batch_gives_zero_kd():
    student, teacher, targets = batch(5)
    kd = DistillationLoss(FocalTverskyLoss()).kd_term(student, teacher, torch.full_like(targets, 255))
    assert kd.item() == 0.0


# ------------------------------------------------------------------------------------------- teacher

def test_teacher_forward_once_frozen_in_the_students_autocast():
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(
        (m.training, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), o.dtype)))
    objective = KDObjective(teacher.train(), DistillationLoss(FocalTverskyLoss()))  # the objective freezes it
    student = torch.nn.Conv2d(1, 1, 3, padding=1)
    images, targets = torch.randn(2, 1, 16, 16), torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    with autocast(torch.device("cpu"), "bf16"):
        loss, extras = objective(student, images, targets)
    loss.backward()
    assert calls == [(False, False, True, torch.bfloat16)]  # one forward, eval mode, no grad, same autocast
    assert set(extras) == set(objective.columns) == {"kd_loss", "sup_loss"}
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.weight.grad is not None


def test_teacher_is_bit_identical_after_a_kd_epoch(tiny_pspnet, tiny_data, tmp_path):
    c = kd_constants(tiny_data, tmp_path / "kd", tiny_pspnet)
    teacher = load_teacher(tiny_pspnet, c)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    modes = []
    teacher.model.register_forward_hook(lambda m, i, o: modes.append(m.training))
    objective = KDObjective(teacher, DistillationLoss(supervised_loss(c)), bands=c["VAL_BANDS"])
    summary = train(c, "PSPMixer", student_args(c), objective=objective, extra_summary=objective.summary)
    after = teacher.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.model.parameters())
    assert modes and not any(modes) and not teacher.model.training  # never in train mode, BN stats untouched
    assert summary["teacher_sha256"] == teacher.sha256 and set(summary["teacher_val"]) >= {"iou_VV", "iou_VH", "iou"}


def test_missing_teacher_says_how_to_train_it(tiny_data, tmp_path):
    with pytest.raises(TeacherError, match="python train_pspnet.py"):
        distill(kd_constants(tiny_data, tmp_path, tmp_path / "nowhere" / "best.pt"))


@pytest.mark.parametrize("override, key, theirs, ours", [
    ({"VAL_BANDS": ("VV",)}, "val_bands", "['VV', 'VH']", "['VV']"),
    ({"IMAGE_SIZE": 32}, "image_size", "64", "32"),
    ({"TRAIN_BANDS": ("VV", "VH", "HH")}, "normalization", None, None),
])
def test_mismatched_teacher_is_a_clear_error(tiny_pspnet, tiny_data, tmp_path, override, key, theirs, ours):
    c = kd_constants(tiny_data, tmp_path, tiny_pspnet, **override)
    with pytest.raises(TeacherError) as error:
        load_teacher(tiny_pspnet, c)
    message = str(error.value)
    assert key in message and "teacher" in message and "student" in message
    if theirs:
        assert f"teacher {theirs} vs student {ours}" in message
    with pytest.raises(TeacherError, match=key):
        distill(c)


def test_unset_data_constants_are_the_teachers(tiny_data, tmp_path):
    # a teacher trained on the SAR bands only: kd.py's None data constants take its settings
    train(tiny_constants(tiny_data, tmp_path / "teacher", TRAIN_BANDS=("VV", "VH")), "UnetLight", {"width": 4})
    teacher = tmp_path / "teacher" / "best.pt"
    c = kd_constants(tiny_data, tmp_path / "kd", teacher, inherit=False, IMAGE_SIZE=None)
    assert c["TRAIN_BANDS"] is None and c["VAL_BANDS"] is None
    inherited = inherit_teacher_data(c)
    assert inherited["TRAIN_BANDS"] == ("VV", "VH") and inherited["VAL_BANDS"] == ("VV", "VH")
    assert inherited["IMAGE_SIZE"] == TINY_SIZE
    load_teacher(teacher, inherited)  # pairs
    assert inherit_teacher_data({**c, "TRAIN_BANDS": "VV, VH"})["TRAIN_BANDS"] == ("VV", "VH")  # NAME=value text
    explicit = inherit_teacher_data({**c, "TRAIN_BANDS": ("VV", "VH", "NDWI")})
    with pytest.raises(TeacherError, match="train_bands"):  # an explicit value that differs is still refused
        load_teacher(teacher, explicit)
    # no teacher file yet: the train scripts' defaults, so the "train it first" message can name them
    assert inherit_teacher_data({**c, "TEACHER_CHECKPOINT": str(tmp_path / "none.pt")})["IMAGE_SIZE"] == 256


def test_any_architecture_is_a_student():
    c = {"STUDENT": "UnetLight", "IMAGE_SIZE": 64, "STUDENT_ARGS": "{'width': 4}"}
    assert student_args(c) == {"width": 4}
    assert full_args("UnetLight", student_args({**c, "STUDENT_ARGS": None})) == full_args("UnetLight", {"width": 16})
    assert student_args({"STUDENT": "MLP_256", "IMAGE_SIZE": 64, "STUDENT_ARGS": None}) == {}
    with pytest.raises(ConfigError, match="available"):
        student_args({"STUDENT": "NoSuchNet", "IMAGE_SIZE": 64})


# ---------------------------------------------------------------------------------------- end to end

def test_kd_script_end_to_end(tiny_pspnet, tiny_data, tmp_path, monkeypatch, capsys):
    import kd
    # the same student trained alone, beside the kd run: the table must find it
    scratch = train(tiny_constants(tiny_data, tmp_path / "pspmixer", EPOCHS=1), "PSPMixer", TINY_STUDENT)
    output = tmp_path / "kd_pspmixer"
    monkeypatch.setattr(sys, "argv", ["kd.py", "EPOCHS=1", f"DATA_ROOT={tiny_data}", f"TEACHER_CHECKPOINT={tiny_pspnet}",
                                      f"OUTPUT_DIR={output}", *TINY_CLI])
    import lib.config
    resolved, resolve = [], lib.config.resolve
    monkeypatch.setattr(lib.config, "resolve", lambda *a, **k: resolved.append(a) or resolve(*a, **k))
    reads = count_teacher_reads(monkeypatch, tiny_pspnet)
    kd.main()
    assert len(reads) == 1  # the teacher file is read once: inherited data settings, model, table
    # this run's constants: load_constants, then once more with the teacher's bands, size and normalization (the
    # table also resolves the recorded constants of the student-alone run it compares with)
    assert len([a for a in resolved if a[0].get("OUTPUT_DIR") == str(output)]) == 2
    printed = capsys.readouterr().out
    for name in ("best.pt", "last.pt", "history.csv", "summary.json"):
        assert (output / name).is_file(), name
    rows = list(csv.DictReader(open(output / "history.csv")))
    assert len(rows) == 1 and {"kd_loss", "sup_loss", "train_loss", "epoch_time_s"} <= set(rows[0])
    assert float(rows[0]["train_loss"]) == pytest.approx(0.5 * float(rows[0]["kd_loss"]) + 0.5 * float(rows[0]["sup_loss"]))
    summary = json.loads((output / "summary.json").read_text())
    teacher_bytes = open(tiny_pspnet, "rb").read()
    import hashlib
    assert summary["teacher_sha256"] == hashlib.sha256(teacher_bytes).hexdigest()
    assert summary["teacher_checkpoint"] == str(tiny_pspnet)
    assert {"iou_VV", "iou_VH", "iou"} <= set(summary["teacher_val"])
    assert {"val_iou_VV", "val_iou_VH", "val_iou"} <= set(summary) and summary["model"] == "PSPMixer"
    model, checkpoint = load_model(output / "best.pt")  # the student rebuilds from its checkpoint alone
    options = {"refine": 0, "activation": "gelu", "norm": "layer"}  # kd.py's REFINE, MIXER_ACTIVATION, MIXER_NORM
    assert checkpoint["model"]["args"] == {**TINY_STUDENT, **options} and read_checkpoint(output / "last.pt")["epoch"] == 1
    # the table: teacher, distilled student, the student alone
    assert "teacher PSPNet" in printed and "student PSPMixer distilled" in printed
    assert "student PSPMixer alone" in printed and str(tmp_path / "pspmixer") in printed
    assert f"{scratch['val_iou']:.3f}" in printed and f"{summary['teacher_val']['iou']:.3f}" in printed


def test_table_says_how_to_train_the_missing_scratch_run(tiny_data, tmp_path):
    from lib_kd.model_kd import train_command, train_script
    c = kd_constants(tiny_data, tmp_path / "kd", "unused", EPOCHS=3)
    assert find_scratch_run(c, "PSPMixer", student_args(c), search=[tmp_path]) is None
    command = train_command(train_script("PSPMixer"), c, student_args(c), keys=("EPOCHS",))
    assert command.startswith("python train_pspmixer.py ") and "EPOCHS=3" in command and f"DATA_ROOT={tiny_data}" in command
    assert "HIDDEN=16 TOKENS_MLP=16 CHANNELS_MLP=32" in command
    assert "PATCH" not in command and "DEPTH" not in command  # only what differs from the script's defaults (16, 3)
