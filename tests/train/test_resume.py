"""Interruption and resume: exact continuation, atomic checkpoints, SIGINT, NaN losses."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, history, tiny_constants
from lib.checkpoint import read_checkpoint, save_checkpoint
from lib.train import engine
from lib.train.checkpoint_saver import CheckpointSaver
from lib.train.engine import TrainingError, train
from lib.train.resume import restore_rng_state

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
    # last.pt is written first and best.pt derived from it, so best.pt is never ahead of last.pt (a SIGKILL
    # between the two leaves it behind; the resume re-derives it: test_resume_rederives_best_left_behind)
    assert read_checkpoint(output / "best.pt")["epoch"] <= epoch
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


def random_draws() -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(1))]


def test_resumed_run_continues_the_random_stream_last_pt_recorded(tiny_data, tmp_path, monkeypatch):
    train(tiny_constants(tiny_data, tmp_path, EPOCHS=1), "UnetLight", ARGS)
    drawn = []

    def first_epoch_of_resumed_run(run, epoch):
        drawn.append(random_draws())  # the generators as resume left them, before the epoch reseeds
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "seed_epoch", first_epoch_of_resumed_run)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # whatever ran before must not matter
    with pytest.raises(SystemExit):  # the engine's exit for an interrupt
        train(tiny_constants(tiny_data, tmp_path, EPOCHS=2, RESUME=True), "UnetLight", ARGS)
    restore_rng_state(read_checkpoint(tmp_path / "last.pt")["training_state"]["rng"])
    assert drawn == [random_draws()]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert drawn != [random_draws()]


def test_last_pt_is_written_before_best_pt_and_best_pt_bytes_are_unchanged(tmp_path, monkeypatch):
    checkpoint = {"format": "sar-kd-flood/1", "epoch": 3, "state_dict": {"w": torch.arange(4.0)}, "metrics": {}}
    save_checkpoint(checkpoint, tmp_path / "alone.pt")  # what best.pt held when it was written on its own
    written = []
    real_save = save_checkpoint
    monkeypatch.setattr("lib.train.checkpoint_saver.save_checkpoint",
                        lambda data, path: (written.append(Path(path).name), real_save(data, path)))
    CheckpointSaver(tmp_path / "run").save_epoch(checkpoint, {"progress": {"epoch": 3}}, True, [{"epoch": 3}], {})
    assert written == ["last.pt", "best.pt"]
    assert (tmp_path / "run" / "best.pt").read_bytes() == (tmp_path / "alone.pt").read_bytes()


def test_resume_rederives_best_left_behind(tiny_data, tmp_path):
    train(tiny_constants(tiny_data, tmp_path, EPOCHS=1), "UnetLight", ARGS)
    best = tmp_path / "best.pt"
    original = read_checkpoint(best)
    best.unlink()  # killed between the writes of last.pt and best.pt
    CheckpointSaver(tmp_path).repair_best(read_checkpoint(tmp_path / "last.pt"))
    repaired = read_checkpoint(best)
    assert repaired.keys() == original.keys() and repaired["epoch"] == original["epoch"] == 1
    assert all(torch.equal(value, repaired["state_dict"][key]) for key, value in original["state_dict"].items())
