"""Shared fixtures: tiny demo datasets made on the fly (64x64 patches) and tiny training constants."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.synthetic.demo import make_demo_dataset  # noqa: E402

TINY_SIZE = 64
REAL_DATA = ROOT.parent / "shared" / "data" / "sen1floods11_spain" / "02_kfold"


@pytest.fixture(scope="module")
def one_thread():
    """Small models on tiny tiles: one thread is faster, and fair to other tests on a shared machine.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 64x64 demo dataset in the 02_kfold layout: 8 train patches (7 bands), 3 val patches (VV, VH)."""
    root = tmp_path_factory.mktemp("tiny") / "02_kfold"
    make_demo_dataset(root, n_train=8, n_val=3, seed=0, size=TINY_SIZE)
    return root


def tiny_constants(data_root: Path, output_dir: Path, **overrides) -> dict:
    """Constants for a fast one-epoch CPU run on tiny data."""
    constants = dict(DATA_ROOT=str(data_root), OUTPUT_DIR=str(output_dir), IMAGE_SIZE=TINY_SIZE, EPOCHS=1,
                     BATCH_SIZE=4, NUM_WORKERS=0, DEVICE="cpu", PROGRESS=False, ENCODER_WEIGHTS=None, WARMUP_EPOCHS=1)
    constants.update(overrides)
    return constants


@pytest.fixture(scope="session")
def tiny_pspnet(tiny_data, tmp_path_factory) -> Path:
    """best.pt of a PSPNet teacher trained for one epoch on the tiny data."""
    from lib.engine import train
    output = tmp_path_factory.mktemp("teacher") / "pspnet"
    train(tiny_constants(tiny_data, output), "PSPNet", {"encoder_depth": 3})
    return output / "best.pt"
