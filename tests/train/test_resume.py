"""Interruption and resume: exact continuation, atomic checkpoints, SIGINT, NaN losses."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, history, tiny_constants
from lib.checkpoint import read_checkpoint, save_checkpoint
from lib.train.engine import TrainingError, train

ARGS = {"width": 4}


def test_killed_after_epoch_two_and_resumed_equals_uninterrupted(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_constants(tiny_data, straight, EPOCHS=3), "UnetLight", ARGS)
    resumed = tmp_path / "resumed"
    train(tiny_constants(tiny_data, resumed, EPOCHS=2), "UnetLight", ARGS)  # "killed" after epoch 2
    train(tiny_constants(tiny_data, resumed, EPOCHS=3, RESUME=True), "UnetLight", ARGS)
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6), key
    drop_time = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history(straight)]
    assert drop_time == [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history(resumed)]


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "sar-kd-flood/1", "epoch": 1}, path)

    def dies_half_way(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise KeyboardInterrupt  # e.g. the process is stopped mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"format": "sar-kd-flood/1", "epoch": 2}, path)
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def run_script(tiny_data, output, *extra):
    command = [sys.executable, "train_unetlight.py", f"DATA_ROOT={tiny_data}", f"OUTPUT_DIR={output}", "IMAGE_SIZE=64",
               "BATCH_SIZE=2", "NUM_WORKERS=0", "DEVICE=cpu", "WIDTH=4", *extra]
    # Ctrl-C enabled in the child even where the test runner was started with SIGINT ignored (nohup, &)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_run_leaves_loadable_checkpoints_and_resumes(tiny_data, tmp_path, sig):
    output = tmp_path / "run"
    # a run that cannot end by itself before the signal (an epoch of the tiny data takes well under 0.1 s)
    process = run_script(tiny_data, output, "EPOCHS=100000", "PATIENCE=100000")
    wait_for(output / "last.pt", process)
    time.sleep(0.3)  # somewhere in the next epoch, maybe mid-write
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
    else:
        assert process.returncode == -signal.SIGKILL
    epoch = read_checkpoint(output / "last.pt")["epoch"]
    # best.pt is written just before last.pt, so a SIGKILL between the two leaves best.pt one epoch ahead
    # (the resumed run repeats that epoch bit for bit and rewrites it); never further
    assert read_checkpoint(output / "best.pt")["epoch"] <= epoch + (sig == signal.SIGKILL)
    resumed = run_script(tiny_data, output, f"EPOCHS={epoch + 1}", "PATIENCE=100000", "RESUME=1")
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"resumed from {output / 'last.pt'} after epoch {epoch}" in stdout
    assert read_checkpoint(output / "last.pt")["epoch"] == epoch + 1


class NaNAtStep:
    columns = ()

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, model, images, targets):
        self.calls += 1
        loss = model(images).mean()
        return (loss * float("nan") if self.calls == self.step else loss), {}


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
    output = tmp_path / "nan"
    c = tiny_constants(tiny_data, output, EPOCHS=3)
    train(c, "UnetLight", ARGS)  # epochs 1-3, all good
    steps_per_epoch = 2  # 8 patches, batch 4
    with pytest.raises(TrainingError, match=r"non-finite training loss at epoch 4, step 2"):
        train({**c, "EPOCHS": 5, "RESUME": True}, "UnetLight", ARGS, objective=NaNAtStep(steps_per_epoch))
    assert read_checkpoint(output / "last.pt")["epoch"] == 3


@pytest.fixture
def ctrl_c_enabled():
    """Python's own SIGINT handler, also where the test runner was started with SIGINT ignored (nohup, &)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_during_checkpoint_writes_is_held_not_lost(ctrl_c_enabled):
    from lib.train.engine import deferred_sigint
    written = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the writes
            written.append("last.pt")            # the write still completes
    assert written == ["last.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_ignored_sigint_stays_ignored_during_writes():
    from lib.train.engine import deferred_sigint
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)  # a background run is not stopped by it
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
