"""Shared fixtures: tiny demo datasets made on the fly (64x64 patches) and tiny training constants."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.data.bands import SAR_DB_RANGE  # noqa: E402
from lib.synthetic.demo import make_demo_dataset  # noqa: E402

TINY_SIZE = 64
REAL_DATA = ROOT.parent / "shared" / "data" / "sen1floods11_spain" / "02_kfold"
RANGES = {"VV": list(SAR_DB_RANGE), "VH": list(SAR_DB_RANGE)}   # a checkpoint's "normalization" for VV, VH
UTM = Affine(10.0, 0.0, 440_000.0, 0.0, -10.0, 4_480_000.0)     # EPSG:32630, 10 m pixels


def write_geotiff(path: Path, array, *, crs: str, transform: Affine, dtype=None, nodata=None) -> Path:
    """A GTiff of `array` ([H, W], [bands, H, W] or a list of [H, W] bands) cast to `dtype` (default: the
    array's own), its folder made first; the raster every test module writes its inputs with."""
    import rasterio  # here: conftest is loaded by every test module, most of which never write a raster
    array = np.asarray(array)
    array = array if array.ndim == 3 else array[None]
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=dtype.name, crs=crs, transform=transform, nodata=nodata) as dataset:
        dataset.write(array.astype(dtype, copy=False))
    return path


def history(output: Path) -> list[dict]:
    """The rows of a run's history.csv, one dict per epoch (values as text)."""
    with open(output / "history.csv") as file:
        return list(csv.DictReader(file))


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
    from lib.train.engine import train
    output = tmp_path_factory.mktemp("teacher") / "pspnet"
    train(tiny_constants(tiny_data, output), "PSPNet", {"encoder_depth": 3})
    return output / "best.pt"
