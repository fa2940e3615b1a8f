"""Fail safe, second round (issue 25) for checkpoints: crafted model arguments or normalization ranges are one
CheckpointError naming the file (never a crash, a huge allocation or a division by zero), and a disk that fills
while torch writes a checkpoint is reported as a failed write that keeps the previous file."""
from __future__ import annotations

import errno
import io
import sys

import pytest
import torch

from lib.checkpoint import FORMAT, atomic_write, load_model, save_checkpoint
from lib.cli import run
from lib.errors import CheckpointError, OutputError
from lib.models.factory import build_model


def crafted(tmp_path, name="UnetLight", args=None, normalization=None, **changes):
    """A checkpoint of a small real model with some of its entries replaced."""
    model = build_model(name, {"width": 4} if name == "UnetLight" else {})
    checkpoint = {"format": FORMAT, "model": {"name": name, "args": {"width": 4} if name == "UnetLight" else {}},
                  "state_dict": model.state_dict(), "epoch": 1, "constants": {},
                  "data": {"format": "bands", "train_bands": ["VV"], "val_bands": ["VV"], "image_size": 64,
                           "normalization": {"VV": [-25.0, 0.0]} if normalization is None else normalization}}
    if args is not None:
        checkpoint["model"]["args"] = args
    checkpoint.update(changes)
    path = tmp_path / "best.pt"
    save_checkpoint(checkpoint, path)
    return path


def test_the_crafting_itself_loads(tmp_path):
    model, checkpoint = load_model(crafted(tmp_path))
    assert checkpoint["model"]["args"] == {"width": 4} and not model.training


@pytest.mark.parametrize("args, found", [
    ({"width": -4}, "negative dimension"),
    ({"width": 10**12}, "overflow"),
    ({"width": 2**70}, "TypeError"),
    ({"width": 0}, "weights do not fit"),         # builds, but not the model of these weights
    ({"width": 4096}, "weights do not fit"),      # a huge model is never allocated to find that out
    ({"width": "4"}, "cannot rebuild"),
    ({"no_such_argument": 1}, "cannot rebuild"),
    ([4], "is not {name, args}"),
])
def test_model_arguments_out_of_range_are_one_checkpoint_error(tmp_path, args, found):
    path = crafted(tmp_path, args=args)
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    assert str(error.value).startswith(f"{path}: ") and found.lower() in str(error.value).lower()


@pytest.mark.parametrize("args", [{"hidden": 10**9}, {"patch": 0}, {"depth": -1}])
def test_mixer_arguments_out_of_range(tmp_path, args):
    with pytest.raises(CheckpointError, match="best.pt: "):
        load_model(crafted(tmp_path, "PSPMixer", args={"patch": 16, "hidden": 48, "depth": 3, **args}))


@pytest.mark.parametrize("bounds", [[float("nan"), 0.0], [-25.0, float("inf")], [0.0, 0.0], [1.0], "x", [True, 2]])
def test_a_normalization_range_that_is_nan_or_empty_is_refused_naming_the_band(tmp_path, bounds):
    path = crafted(tmp_path, normalization={"VV": bounds})
    with pytest.raises(CheckpointError, match=rf"{path}: normalization range of band VV is .* two different finite"):
        load_model(path)


def test_a_reversed_range_is_a_range(tmp_path):  # NDWI's [1, -1]: water dark, as the SAR bands
    assert load_model(crafted(tmp_path, normalization={"VV": [-25.0, 0.0], "NDWI": [1.0, -1.0]}))[1]


def test_evaluate_reports_a_crafted_checkpoint_in_one_line(tmp_path, monkeypatch, capsys):
    import evaluate
    path = crafted(tmp_path, args={"width": -4})
    monkeypatch.setattr(sys, "argv", ["evaluate.py", str(path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as stopped:
        run(lambda: evaluate.main(sys.argv[1:]))
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and err.startswith(f"error: {path}: cannot rebuild model") and err.count("\n") == 1


class FillingDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)


@pytest.mark.parametrize("existed", [True, False])
def test_a_disk_that_fills_while_torch_writes_is_a_failed_write_that_keeps_the_previous_file(tmp_path, existed):
    path = tmp_path / "last.pt"
    if existed:
        save_checkpoint({"format": FORMAT, "epoch": 1}, path)
        before = path.read_bytes()
    with pytest.raises(OutputError) as error:  # torch's zip writer raises RuntimeError: reported as what it is
        atomic_write(path, lambda handle: torch.save({"w": torch.zeros(100_000)}, FillingDisk(handle, 2000)))
    kept = "the previous last.pt is kept unchanged" if existed else "no last.pt was written"
    assert str(error.value) == f"{path}: could not be written (No space left on device (errno 28)); {kept}"
    assert (path.read_bytes() == before) if existed else not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["last.pt"] if existed else [])  # no temporary file left


def test_a_runtime_error_that_is_not_a_write_failure_is_not_hidden(tmp_path):
    def broken(handle):
        raise RuntimeError("a bug, not a disk")
    with pytest.raises(RuntimeError, match="a bug"):
        atomic_write(tmp_path / "x.pt", broken)
