"""Fail safe, second round (issue 25) for training: labels that cannot be what they seem (0/255 masks, no valid
pixel), encoder-weights files that are not plain state dicts, and SIGTERM handled as Ctrl-C."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_constants
from lib.data.dataset import BandPatchDataset
from lib.errors import CheckpointError, DataError
from lib.models.factory import build_model
from lib.train.encoder_weights import load_encoder_weights

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------- labels

def relabel(tiny_data, tmp_path, split: str, convert) -> Path:
    root = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    for path in (root / split / "lab").glob("*.npy"):
        np.save(path, convert(np.load(path)))
    return root


@pytest.mark.parametrize("split", ["train", "val"])
def test_labels_saved_as_0_255_are_refused_naming_the_folder(tiny_data, tmp_path, split):
    root = relabel(tiny_data, tmp_path, split, lambda label: np.where(label == 1, 255, 0).astype(np.uint8))
    with pytest.raises(DataError) as error:
        BandPatchDataset(root, split, ("VV",), train=split == "train", image_size=64, preload=False)
    message = str(error.value)
    assert message.startswith(f"{root / split / 'lab'}: no label pixel is 1 (water) but ")
    assert "look like masks saved as 0/255" in message and "255 -> 1" in message


def test_a_split_without_any_valid_label_pixel_is_refused(tiny_data, tmp_path):
    root = relabel(tiny_data, tmp_path, "val", lambda label: np.full_like(label, 7))
    with pytest.raises(DataError, match=r"val/lab: no label pixel is 0 or 1 \(0: 0 px, 1: 0 px, 255: 0 px, other: "):
        BandPatchDataset(root, "val", ("VV",), train=False, image_size=64, preload=False)


def test_a_dry_split_with_true_nodata_but_some_water_elsewhere_is_accepted(tiny_data, tmp_path):
    # 255 beside 0 and 1 is the documented no-data: a split holding water is not a 0/255 mask
    root = relabel(tiny_data, tmp_path, "train", lambda label: np.where(np.arange(label.shape[1]) < 4, 255, label).astype(np.uint8))
    assert len(BandPatchDataset(root, "train", ("VV",), train=True, image_size=64, preload=False)) > 0


def test_a_dry_split_whose_255_is_where_the_image_has_no_data_is_accepted(tiny_data, tmp_path):
    # a real chip without water (STAC Overflow's awc00): labels 0 and 255, the 255 exactly where the image is NaN
    root = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    for label_path in (root / "val" / "lab").glob("*.npy"):
        missing = np.arange(64)[None, :].repeat(64, 0) < 20
        np.save(label_path, np.where(missing, 255, 0).astype(np.uint8))
        for image_path in (root / "val" / "img").glob(f"{label_path.stem}_*.npy"):
            np.save(image_path, np.where(missing, np.nan, np.load(image_path)).astype(np.float32))
    assert len(BandPatchDataset(root, "val", ("VV",), train=False, image_size=64, preload=False)) > 0


def test_a_training_run_on_0_255_labels_stops_before_the_first_epoch(tiny_data, tmp_path):
    from lib.train.engine import train
    root = relabel(tiny_data, tmp_path, "val", lambda label: (label == 1).astype(np.uint8) * 255)
    with pytest.raises(DataError, match="look like masks saved as 0/255"):
        train(tiny_constants(root, tmp_path / "run"), "UnetLight", {"width": 4})
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ encoder weights

class NotPlain:
    pass


@pytest.mark.parametrize("content, found", [
    ("object", "not a plain state dict: it holds objects other than tensors"),
    ("garbage", "not a readable weights file"),
    ("list", "not a state dict of named tensors (found list)"),
    ("empty", "not a state dict of named tensors (found dict)"),
])
def test_an_encoder_weights_file_that_is_not_a_plain_state_dict_is_one_error(tmp_path, content, found):
    path = tmp_path / "encoder.pt"
    if content == "object":
        torch.save({"encoder": NotPlain()}, path)
    elif content == "garbage":
        path.write_bytes(b"not weights at all")
    else:
        torch.save([torch.zeros(1)] if content == "list" else {}, path)
    model = build_model("PSPNet", {"encoder_depth": 3})
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(model, str(path))
    message = str(error.value)
    assert message.startswith(f"ENCODER_WEIGHTS {path}: {found}")
    assert "weights_only" not in message  # never the advice to unpickle an unknown file in full


# ------------------------------------------------------------------------------------------------ SIGTERM

def test_sigterm_stops_a_run_as_ctrl_c_does(tiny_data, tmp_path):
    output = tmp_path / "run"
    command = [sys.executable, "train_unetlight.py", f"DATA_ROOT={tiny_data}", f"OUTPUT_DIR={output}", "IMAGE_SIZE=64",
               "BATCH_SIZE=2", "NUM_WORKERS=0", "DEVICE=cpu", "WIDTH=4", "EPOCHS=100000", "PATIENCE=100000"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (output / "last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the next epoch, maybe mid-write
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stdout.splitlines() if line.startswith("interrupted")][0].endswith("continue with RESUME=1")
    assert sorted(p.name for p in output.iterdir()) == ["best.pt", "curves.png", "history.csv", "last.pt", "summary.json"]
