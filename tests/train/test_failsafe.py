"""Fail safe (issue 13): one run per output folder, resume only of the same run, output folders that cannot
be written, true messages, metrics of bands without valid pixels, and kd.py's student-alone match."""
from __future__ import annotations

import errno
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_constants
from lib.train import run_lock
from lib.checkpoint import atomic_write, read_checkpoint, save_checkpoint
from lib.data.factory import data_settings
from lib.train.checkpoint_saver import write_json
from lib.train.engine import train
from lib.errors import CheckpointError, ConfigError, DataError, OutputError, TrainingError
from lib.train.metrics import BandConfusion
from lib.train.run_lock import LOCK_NAME, RunLock, hold_output_dir

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = {"width": 4}


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """A finished one-epoch UnetLight run (EPOCHS=1, PATIENCE=20); tests resume copies of it."""
    output = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_constants(tiny_data, output), "UnetLight", ARGS)
    return output


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


# ------------------------------------------------------------------------------ one run per output folder

HOLDER = """
import sys, time
sys.argv = ["train_unetlight.py", "EPOCHS=100"]
from lib.train.run_lock import RunLock
RunLock(sys.stdin.readline().strip()).acquire()
print("held", flush=True)
time.sleep(600)
"""


def start_holder(output: Path) -> subprocess.Popen:
    """Another process that holds the lock of `output`, as a run in progress does."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    process.stdin.write(f"{output}\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_run_in_a_held_folder_is_refused_naming_the_holder_then_a_stale_lock_is_taken_over(tiny_data, tmp_path):
    output = tmp_path / "run"
    holder = start_holder(output)
    try:
        with pytest.raises(OutputError) as found:
            train(tiny_constants(tiny_data, output), "UnetLight", ARGS)
        message = str(found.value)
        assert f"OUTPUT_DIR {output} is in use by another run (PID {holder.pid} " in message, message
        assert "command: python train_unetlight.py EPOCHS=100" in message, message
        assert sorted(p.name for p in output.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run leaves its lock file behind
        holder.wait()
    assert (output / LOCK_NAME).is_file()
    logged = []
    with hold_output_dir(output, log=logged.append) as lock:
        assert json.loads((output / LOCK_NAME).read_text())["pid"] != holder.pid
    assert lock.previous["pid"] == holder.pid
    assert logged and f"took over the stale lock {output / LOCK_NAME}" in logged[0] and f"PID {holder.pid}" in logged[0]
    assert not (output / LOCK_NAME).exists()  # released on exit


def test_lock_is_released_on_error_and_on_ctrl_c(tiny_data, tmp_path):
    output = tmp_path / "new" / "run"
    with pytest.raises(DataError):  # the run fails after taking the lock: lock gone, and the empty folder it made
        train(tiny_constants(tmp_path / "no_data", output), "UnetLight", ARGS)
    assert not output.exists()
    output.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        with hold_output_dir(output):
            assert (output / LOCK_NAME).is_file()
            raise KeyboardInterrupt
    assert output.is_dir() and not (output / LOCK_NAME).exists()  # a folder it did not create stays


def test_two_locks_on_one_folder_in_one_process_conflict(tmp_path):
    first = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(OutputError, match=f"PID {__import__('os').getpid()} "):
            RunLock(tmp_path).acquire()
    finally:
        first.release()
    RunLock(tmp_path).acquire().release()  # free again


# ------------------------------------------------------------------------------ folders that cannot be written

def test_output_dir_that_is_a_file_is_refused_before_any_data_is_read(tiny_data, tmp_path, capsys):
    path = tmp_path / "runs.txt"
    path.write_text("not a folder")
    with pytest.raises(OutputError, match=f"^OUTPUT_DIR {path}: is a file, not a folder"):
        train(tiny_constants(tiny_data, path), "UnetLight", ARGS)
    with pytest.raises(OutputError, match=f"^OUTPUT_DIR {path / 'run'}: cannot be created \\(Not a directory"):
        train(tiny_constants(tiny_data, path / "run"), "UnetLight", ARGS)
    assert "data " not in capsys.readouterr().out and path.read_text() == "not a folder"


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0,
                    reason="root writes into a read-only folder anyway; covered by the injected OSError below")
def test_read_only_output_dir_is_refused(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot be written \\(Permission denied"):
            RunLock(tmp_path).acquire()
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("where, error", [("open", errno.EROFS), ("write", errno.ENOSPC)])
def test_output_dir_that_cannot_be_written_is_refused_by_injected_os_error(tmp_path, monkeypatch, where, error):
    def fail(*args, **kwargs):
        raise OSError(error, __import__("os").strerror(error))
    if where == "open":
        monkeypatch.setattr(run_lock.os, "open", fail)
    else:
        monkeypatch.setattr(run_lock, "write_holder", fail)
    with pytest.raises(OutputError) as found:
        RunLock(tmp_path / "run").acquire()
    assert str(found.value).startswith(f"OUTPUT_DIR {tmp_path / 'run'}: cannot be written "
                                       f"({__import__('os').strerror(error)} (errno {error})")
    monkeypatch.undo()
    RunLock(tmp_path / "run").acquire().release()  # the failed attempt left no lock behind


def test_disk_full_during_a_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "sar-kd-flood/1", "epoch": 1}, path)
    import builtins
    import lib.checkpoint as checkpoint_module
    # a real ENOSPC from the kernel: the temporary file is /dev/full
    monkeypatch.setattr(checkpoint_module, "open", lambda name, mode: builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(OutputError, match=f"^{path}: could not be written \\(No space left on device \\(errno 28\\)\\); "
                                          "the previous last.pt is kept unchanged"):
        save_checkpoint({"format": "sar-kd-flood/1", "epoch": 2, "weights": torch.zeros(10_000)}, path)
    with pytest.raises(OutputError, match="summary.json: could not be written .*; no summary.json was written"):
        write_json({"val_iou": 0.5}, tmp_path / "summary.json")
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_checkpoint_write_failing_mid_run_is_one_error_and_last_pt_survives(finished_run, tmp_path, monkeypatch, tiny_data):
    output = copy_of(finished_run, tmp_path)
    real_save = torch.save

    def disk_full_on_last(obj, handle, *args, **kwargs):
        if ".last.pt" in str(getattr(handle, "name", "")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_last)
    with pytest.raises(OutputError, match=f"^{output / 'last.pt'}: could not be written \\(No space left on device "
                                          "\\(errno 28\\)\\); the previous last.pt is kept unchanged"):
        train(tiny_constants(tiny_data, output, EPOCHS=2, RESUME=True), "UnetLight", ARGS)
    monkeypatch.undo()
    assert read_checkpoint(output / "last.pt")["epoch"] == 1
    assert not [p for p in output.iterdir() if p.name.startswith(".")] and not (output / LOCK_NAME).exists()


def test_atomic_write_of_any_file_keeps_the_previous_content_on_failure(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"new, half")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OutputError, match="curves.png: could not be written \\(Input/output error"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"


# ------------------------------------------------------------------------------------------------- resume

def test_resume_with_changed_constants_is_refused_listing_each_difference(finished_run, tmp_path, tiny_data):
    output = copy_of(finished_run, tmp_path)
    other_root = Path(shutil.copytree(tiny_data, tmp_path / "same_data_elsewhere"))
    changed = tiny_constants(other_root, output, RESUME=True, LR=0.1, VAL_BANDS=("VV",), BATCH_SIZE=2)
    with pytest.raises(ConfigError) as found:
        train(changed, "UnetLight", ARGS)
    message = str(found.value)
    assert "\n" not in message and message.startswith(f"RESUME=1 but {output / 'last.pt'} was trained with other "
                                                      "settings: ")
    listed = message.split("settings: ", 1)[1].split(". Resume may change only EPOCHS, PATIENCE")[0]
    assert listed.split("; ") == [f"DATA_ROOT {tiny_data} -> {other_root}", "VAL_BANDS VV,VH -> VV",
                                  "BATCH_SIZE 4 -> 2", "LR 0.0005 -> 0.1"], message  # RESUME itself is no difference
    with pytest.raises(ConfigError, match=r"other settings: model arguments \{'width': 4\} -> \{'width': 8\}"):
        train(tiny_constants(tiny_data, output, RESUME=True, EPOCHS=2), "UnetLight", {"width": 8})
    assert read_checkpoint(output / "last.pt")["epoch"] == 1  # nothing was trained or written


def test_resume_extending_epochs_and_patience_is_allowed_and_recorded(finished_run, tmp_path, tiny_data, capsys):
    output = copy_of(finished_run, tmp_path)
    # OUTPUT_DIR spelled another way is the same folder; PRELOAD is how the run reads its data, not what it means
    summary = train(tiny_constants(tiny_data, f"{output}/.", RESUME=True, EPOCHS=2, PATIENCE=30, PRELOAD=False),
                    "UnetLight", ARGS)
    assert f"resumed from {output / 'last.pt'} after epoch 1; changed: PRELOAD auto -> False; EPOCHS 1 -> 2; " \
           "PATIENCE 20 -> 30" in capsys.readouterr().out
    expected = [{"after_epoch": 1, "changed": {"PRELOAD": ["auto", "False"], "EPOCHS": ["1", "2"], "PATIENCE": ["20", "30"]}}]
    assert summary["resumes"] == expected and summary["epochs_run"] == 2
    assert json.loads((output / "summary.json").read_text())["resumes"] == expected
    assert read_checkpoint(output / "last.pt")["training_state"]["progress"]["resumes"] == expected  # kept for later resumes
    with pytest.raises(ConfigError, match="the run is complete: .* holds epoch 2 of EPOCHS=2; raise EPOCHS"):
        train(tiny_constants(tiny_data, output, RESUME=True, EPOCHS=2, PATIENCE=30), "UnetLight", ARGS)
    with pytest.raises(ConfigError, match="RESUME=1 with EPOCHS=1, but .* already holds 2 epochs"):
        train(tiny_constants(tiny_data, output, RESUME=True, EPOCHS=1, PATIENCE=30), "UnetLight", ARGS)


def edit_normalization(output: Path) -> None:
    """last.pt as if lib/data/bands.py had another VV range when the run started."""
    checkpoint = read_checkpoint(output / "last.pt")
    checkpoint["data"]["normalization"]["VV"] = [-40.0, 5.0]
    save_checkpoint(checkpoint, output / "last.pt")


def edit_world_size(output: Path) -> None:
    """summary.json as written by a torchrun run of two processes."""
    summary = json.loads((output / "summary.json").read_text())
    (output / "summary.json").write_text(json.dumps({**summary, "world_size": 2}))


@pytest.mark.parametrize("edit, listed", [(edit_normalization, "data normalization"),
                                          (edit_world_size, "torchrun processes (BATCH_SIZE is per process) 2 -> 1")])
def test_resume_with_equal_constants_but_other_data_settings_or_process_count_is_refused(
        finished_run, tmp_path, tiny_data, edit, listed):
    output = copy_of(finished_run, tmp_path)
    edit(output)
    with pytest.raises(ConfigError, match=f"was trained with other settings: {re.escape(listed)}"):
        train(tiny_constants(tiny_data, output, RESUME=True, EPOCHS=2), "UnetLight", ARGS)


def test_resume_from_a_best_pt_copied_to_last_pt_says_what_the_file_is(finished_run, tmp_path, tiny_data):
    output = copy_of(finished_run, tmp_path)
    shutil.copy(output / "best.pt", output / "last.pt")
    with pytest.raises(CheckpointError) as found:
        train(tiny_constants(tiny_data, output, RESUME=True, EPOCHS=2), "UnetLight", ARGS)
    assert str(found.value).startswith(f"{output / 'last.pt'}: holds no training state: it is a model checkpoint "
                                       "(UnetLight weights of epoch 1, like best.pt)")
    assert "RESUME=1 needs" in str(found.value)


# ------------------------------------------------------------------------------------------ true messages

class NonFinite:
    """An objective whose loss (and KD-like column) is infinite from the first step."""
    columns = ("kd_loss",)

    def __call__(self, model, images, targets):
        loss = model(images).mean()
        loss = loss.abs() + 1  # > 0, so times inf is +inf
        return loss * float("inf"), {"kd_loss": loss.detach() * float("inf")}


def test_non_finite_loss_at_the_first_step_claims_no_checkpoint_and_does_not_blame_the_lr(tiny_data, tmp_path):
    with pytest.raises(TrainingError) as found:
        train(tiny_constants(tiny_data, tmp_path / "run"), "UnetLight", ARGS, objective=NonFinite())
    message = str(found.value)
    assert message.startswith("non-finite training loss at epoch 1, step 1 (loss ")
    assert "kd_loss inf" in message and "No checkpoint was written" in message and "is kept" not in message
    assert "not because of the learning rate" in message and "lower LR" not in message
    assert not (tmp_path / "run" / "last.pt").exists()


class CtrlCAtFirstStep:
    columns = ()

    def __call__(self, model, images, targets):
        raise KeyboardInterrupt


def test_ctrl_c_in_the_first_epoch_does_not_offer_a_resume_that_cannot_work(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        train(tiny_constants(tiny_data, tmp_path / "run"), "UnetLight", ARGS, objective=CtrlCAtFirstStep())
    out = capsys.readouterr().out
    assert stopped.value.code == 130 and "interrupted in the first epoch: no checkpoint was written" in out
    assert "RESUME=1" not in out and not (tmp_path / "run" / "last.pt").exists()


# -------------------------------------------------------------------------------------------------- metrics

def confusion_with_empty_vh() -> BandConfusion:
    confusion = BandConfusion(["VV", "VH"])
    target = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    target[0, 0, :, :4] = 1
    target[1] = 255  # the VH image: every pixel no-data
    logits = torch.where(target == 1, 5.0, -5.0).float()
    logits[0, 0, 0, 5] = 5.0  # one false positive in VV
    confusion.update(logits, target, torch.tensor([0, 1]))
    return confusion


def test_band_without_valid_pixels_has_no_score_and_is_left_out_of_the_mean():
    with pytest.warns(RuntimeWarning, match="validation band VH has no valid pixel"):
        metrics = confusion_with_empty_vh().compute()
    assert metrics["iou_VV"] == pytest.approx(32 / 33)
    assert all(math.isnan(metrics[f"{name}_VH"]) for name in ("iou", "f1", "precision", "recall", "accuracy",
                                                               "iou_per_image"))
    assert metrics["iou"] == metrics["iou_VV"] and metrics["iou_per_image"] == metrics["iou_per_image_VV"]


def test_no_valid_pixel_in_any_band_is_a_data_error():
    confusion = BandConfusion(["VV"])
    confusion.update(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 255, dtype=torch.uint8), torch.tensor([0]))
    with pytest.raises(DataError, match="no valid pixel in any validation band \\(VV\\)"):
        confusion.compute()


def test_all_nan_band_in_training_is_reported_as_null_and_best_pt_follows_the_other_band(tiny_data, tmp_path):
    root = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    for path in (root / "val" / "img").glob("*_VH.npy"):
        np.save(path, np.full(np.load(path).shape, np.nan, np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(tiny_constants(root, tmp_path / "run", VAL_BANDS=("VV", "VH")), "UnetLight", ARGS)
    assert any("validation band VH has no valid pixel" in str(w.message) for w in caught)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())  # valid JSON: NaN became null
    assert written["val_iou_VH"] is None and written["val_iou"] == pytest.approx(written["val_iou_VV"])
    assert summary["val_iou"] == pytest.approx(summary["val_iou_VV"])
    assert read_checkpoint(tmp_path / "run" / "best.pt")["metrics"]["iou_VH"] is None


# ----------------------------------------------------------------------------- kd.py: the student alone

def fake_scratch_run(folder: Path, c: dict, name: str, args: dict) -> Path:
    """The summary.json a plain run of `name` with constants `c` writes (only what the matching reads)."""
    folder.mkdir(parents=True)
    summary = {"model": name, "model_args": args, "constants": c, "val_iou": 0.5,
               "data": {"root": str(c["DATA_ROOT"]), **data_settings(c)}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder / "summary.json"


def test_kd_matches_the_student_alone_run_of_the_same_kompsat5_fold_only(tmp_path):
    from lib_kd.comparison import find_scratch_run, matched_on
    k5 = dict(DATA_FORMAT="kompsat5", DATA_ROOT=str(tmp_path / "data_k5"), IMAGE_SIZE=256, EPOCHS=3)
    fold = lambda i: {**k5, "TRAIN_LIST": f"folds/fold_{i}/train.txt", "VAL_LIST": f"folds/fold_{i}/val.txt"}  # noqa: E731
    time_ordered = []
    for i in (1, 2):  # fold 2 is the newer run
        time_ordered.append(fake_scratch_run(tmp_path / "runs" / f"unetlight_fold{i}", fold(i), "UnetLight", ARGS))
        time.sleep(0.01)
    kd_run = {**fold(1), "OUTPUT_DIR": str(tmp_path / "runs" / "kd_unetlight")}
    assert find_scratch_run(kd_run, "UnetLight", ARGS, search=[tmp_path / "runs"]) == time_ordered[0]
    assert find_scratch_run({**kd_run, **fold(2)}, "UnetLight", ARGS, search=[tmp_path / "runs"]) == time_ordered[1]
    assert find_scratch_run({**kd_run, "VAL_LIST": "folds/fold_3/val.txt"}, "UnetLight", ARGS,
                            search=[tmp_path / "runs"]) is None
    note = matched_on({**kd_run, "TRAIN_BANDS": ("HH",), "VAL_BANDS": ("HH",)})
    assert "TRAIN_LIST folds/fold_1/train.txt, VAL_LIST folds/fold_1/val.txt" in note and "EPOCHS 3" in note
