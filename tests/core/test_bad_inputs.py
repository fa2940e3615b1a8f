"""The bad-input catalogue (issue 6): every bad input a user can hand the training scripts, and what happens.

Each case ends in one of three documented outcomes (docs/bad-inputs.md):

* an error: exit code 1 and one line `error: <file>: <what is wrong>` on stderr, never a traceback,
  also when the file is read inside a DataLoader worker;
* a counted skip: the patch is left out and counted in the split's report line;
* accepted and converted: training runs, and values are normalized (or become no-data) as documented.

Most cases call the library in-process (index_split, read_npy, BandPatchDataset, train). The cases that
need the real user path run `python train_unetlight.py ...` in a subprocess; each of those costs a Python
start and a torch import, so they all start together, a few at a time, in one module fixture.
"""
from __future__ import annotations

import csv
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import ROOT, TINY_SIZE, tiny_constants
from lib.data.bands import BAND_RANGES
from lib.checkpoint import CheckpointError, read_checkpoint
from lib.cli import clean_message
from lib.config import ConfigError
from lib.data.dataset import BandPatchDataset, DataError, index_split, read_npy
from lib.data.labels import IGNORE_INDEX
from lib.train.loss import FocalTverskyLoss

SIZE = TINY_SIZE
BANDS = ("VV", "VH")
LO, HI = BAND_RANGES["VV"]


def scaled(db) -> np.ndarray:
    """The documented normalization of a VV dB value: clip to the default VV range, scale to [0, 1]."""
    return np.clip((np.asarray(db, np.float64) - LO) / (HI - LO), 0, 1)


def make_split(root: Path, split: str = "train", patches=("p0", "p1"), bands=BANDS) -> Path:
    """Good patches: each band in dB (float32) and a 0/1 label (left half water)."""
    (root / split / "img").mkdir(parents=True, exist_ok=True)
    (root / split / "lab").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for patch_id in patches:
        label = np.zeros((SIZE, SIZE), np.uint8)
        label[:, : SIZE // 2] = 1
        np.save(root / split / "lab" / f"{patch_id}.npy", label)
        for band in bands:
            db = rng.normal(-12, 3, (SIZE, SIZE)).astype(np.float32)
            np.save(root / split / "img" / f"{patch_id}_{band}.npy", db)
    return root


# ------------------------------------------------------------------------- broken files: errors naming them

def save(array: np.ndarray):
    return lambda path: np.save(path, array)


def object_array(path: Path) -> None:
    array = np.empty((SIZE, SIZE), dtype=object)
    array[:] = -12.0
    np.save(path, array, allow_pickle=True)


def npz_archive(path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, image=np.zeros((SIZE, SIZE), np.float32))


def truncate(path: Path, size: int | None = None) -> None:
    """Cut a file to `size` bytes (default: half of it)."""
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2 if size is None else size)


def directory_in_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


def dangling_symlink(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("moved_away.npy"))


NOT_NPY = r"not a \.npy file"
BROKEN_FILES = {  # how a file is broken: (writer, what the message says after "<file>: ")
    "wrong shape": (save(np.zeros((SIZE, SIZE // 2), np.float32)),
                    r"expected shape \(64, 64\) \(IMAGE_SIZE=64\), got \(64, 32\)"),
    "3-D array": (save(np.zeros((3, SIZE, SIZE), np.float32)),
                  r"expected a 2-D array \(H, W\), got shape \(3, 64, 64\)"),
    "truncated data": (truncate, r"not a readable \.npy array"),
    "truncated header": (lambda p: truncate(p, 20),
                         r"not a readable \.npy array \(ValueError: EOF: reading array header"),
    "garbage bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), NOT_NPY + r" .*first bytes"),
    "text file": (lambda p: p.write_text("x,y,value\n0,0,-12.5\n"), NOT_NPY + r" .*first bytes b'x,y,va'"),
    "zero bytes": (lambda p: p.write_bytes(b""), r"file is empty \(0 bytes\)"),
    "object array": (object_array, r"refused: an object array"),
    "raw pickle": (lambda p: p.write_bytes(pickle.dumps(np.zeros((SIZE, SIZE)))),
                   NOT_NPY + r" \(a Python pickle; refused"),
    "npz archive": (npz_archive, NOT_NPY + r" \(a zip archive, e\.g\. an \.npz"),
    "complex values": (save(np.ones((SIZE, SIZE), np.complex64)), r"got dtype complex64 \(complex SAR data"),
    "strings": (save(np.full((SIZE, SIZE), "water")), r"expected a real numeric array .*got dtype <U5"),
    # root reads files whatever their mode bits, so these two also stand in for "unreadable" (see below)
    "directory in place of the file": (directory_in_place, r"not a readable \.npy array \(IsADirectoryError"),
    "dangling symlink": (dangling_symlink, r"not found \(deleted, or a broken symlink\)"),
}


@pytest.mark.parametrize("which", ["train/img/p1_VH.npy", "train/lab/p1.npy"])
@pytest.mark.parametrize("broken", list(BROKEN_FILES))
def test_broken_file_is_an_error_naming_it(tmp_path, broken, which):
    write, expected = BROKEN_FILES[broken]
    path = make_split(tmp_path) / which
    write(path)
    with pytest.raises(DataError) as found:  # at start, when every header is checked
        index_split(tmp_path, "train", BANDS, SIZE)
    assert str(found.value).startswith(f"{path}: ") and re.search(expected, str(found.value)), str(found.value)
    with pytest.raises(DataError) as found:  # and on a full read (preload or a DataLoader worker)
        read_npy(path, SIZE)
    assert str(found.value).startswith(f"{path}: ") and re.search(expected, str(found.value)), str(found.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions; the unreadable "
                    "case is covered by 'directory in place of the file' and 'dangling symlink'")
def test_file_without_read_permission_is_an_error_naming_it(tmp_path):
    path = make_split(tmp_path) / "train" / "img" / "p1_VV.npy"
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=re.escape(f"{path}: permission denied")):
            index_split(tmp_path, "train", BANDS, SIZE)
    finally:
        path.chmod(0o644)


# ------------------------------------------------------------------------------- layout: errors and skips

def test_data_root_that_is_a_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "02_kfold.zip"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=re.escape(f"DATA_ROOT '{path}' is a file, not a folder")):
        index_split(path, "train", BANDS, SIZE)


def test_empty_split_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "train" / "img").mkdir(parents=True)
    (tmp_path / "train" / "lab").mkdir()
    (tmp_path / "train" / "img" / "notes.txt").write_text("not a band")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train'}: no .npy files found in img/ and lab/")):
        index_split(tmp_path, "train", BANDS, SIZE)


def test_missing_split_folder_is_an_error_naming_it(tmp_path):
    make_split(tmp_path, "train")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'val' / 'img'}: folder missing")):
        index_split(tmp_path, "val", BANDS, SIZE)


def test_orphan_labels_and_band_files_are_skipped_and_counted(tmp_path):
    make_split(tmp_path, "train", patches=("p0", "p1", "band_only"))
    (tmp_path / "train" / "lab" / "band_only.npy").unlink()
    np.save(tmp_path / "train" / "lab" / "label_only.npy", np.zeros((SIZE, SIZE), np.uint8))
    (tmp_path / "train" / "img" / "p1_vv.npy").write_bytes(b"")  # not a band of the list (case matters): ignored
    index = index_split(tmp_path, "train", BANDS, SIZE)
    assert [patch_id for patch_id, _, _ in index.patches] == ["p0", "p1"]
    assert index.skipped == Counter({"label without band files": 1, "band files without label": 1})
    assert index.report() == "train: 2 patches; skipped 2 (band files without label: 1, label without band files: 1)"


def test_split_where_every_patch_is_skipped_is_an_error_with_the_counts(tmp_path):
    make_split(tmp_path, "train", patches=("p0",), bands=("VV",))
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train'}: no usable patches with bands ['VV', 'VH'] "
                                                  "(train: 0 patches; skipped 1 (missing band VH: 1))")):
        index_split(tmp_path, "train", BANDS, SIZE)


def test_preload_override_is_honoured_or_refused(tmp_path):
    """PRELOAD=false on the command line arrives as the string "false" (the default is "auto"); it used to be
    truthy, so the split was preloaded anyway and files were never read where the user expected."""
    make_split(tmp_path, "val")
    for text, cached in (("false", False), ("0", False), ("true", True), ("auto", True)):
        dataset = BandPatchDataset(tmp_path, "val", BANDS, train=False, image_size=SIZE, preload=text)
        assert (dataset.cache is not None) == cached, text
    with pytest.raises(ConfigError, match="PRELOAD='maybe': expected auto, true or false"):
        BandPatchDataset(tmp_path, "val", BANDS, train=False, image_size=SIZE, preload="maybe")


# ------------------------------------------------------------------------------ accepted and converted

ODD_LABELS = (-1, 2, 7, 255, np.nan)  # every label value other than 0 and 1 is no-data
IMAGE_DTYPES = (np.float32, np.int16, np.float16, np.int32, ">f4", np.float64)
LABEL_DTYPES = (np.float32, np.int16, np.uint8, bool, np.int64, np.float64)
ALL_NODATA = 5  # the patch whose VH band is all NaN and whose label is all no-data


def as_label(label: np.ndarray, dtype) -> np.ndarray:
    """A float label in `dtype`; values the dtype cannot hold become other no-data values (-1 or 255)."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return label == 1
    if kind in "iu":
        label = np.nan_to_num(label, nan=-1.0)
        if kind == "u":
            label[label < 0] = 255
    return label.astype(dtype)


def write_accepted_inputs(root: Path, split: str, patches: int) -> None:
    """Patches in every accepted dtype, with NaN/inf pixels in VH and rows of odd label values."""
    make_split(root, split, patches=[f"p{i}" for i in range(patches)])
    img, lab = root / split / "img", root / split / "lab"
    for i in range(patches):
        vv = np.load(img / f"p{i}_VV.npy").astype(IMAGE_DTYPES[i % len(IMAGE_DTYPES)])
        vh = np.load(img / f"p{i}_VH.npy")
        vh[3, :], vh[4, :5], vh[5, :5] = np.nan, np.inf, -np.inf
        label = np.load(lab / f"p{i}.npy").astype(np.float32)
        for row, value in enumerate(ODD_LABELS):
            label[10 + row, :] = value
        if i == ALL_NODATA:
            vh[:], label[:] = np.nan, -1
        np.save(img / f"p{i}_VV.npy", vv)
        np.save(img / f"p{i}_VH.npy", vh)
        np.save(lab / f"p{i}.npy", as_label(label, LABEL_DTYPES[i % len(LABEL_DTYPES)]))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8, np.float16, np.float64, ">f4"])
@pytest.mark.parametrize("preload", [True, False])
def test_integer_and_float16_bands_are_converted_and_normalized(tmp_path, dtype, preload):
    make_split(tmp_path, "val", patches=("p",))
    raw = np.tile(np.array([-30, -22, -11, -5, 0, 7], dtype=np.float64), (SIZE, SIZE // 6 + 1))[:, :SIZE]
    if np.dtype(dtype).kind == "u":
        raw = np.abs(raw)
    np.save(tmp_path / "val" / "img" / "p_VV.npy", raw.astype(dtype))
    image, target, band = BandPatchDataset(tmp_path, "val", BANDS, train=False, image_size=SIZE, preload=preload)[0]
    assert int(band) == 0 and image.dtype == torch.float32 and target.dtype == torch.uint8
    expected = scaled(raw.astype(dtype).astype(np.float64))
    assert np.allclose(image[0].numpy(), expected, atol=1e-3 if preload else 1e-6)  # the cache is float16
    assert set(np.unique(target.numpy())) == {0, 1}  # no pixel became no-data


@pytest.mark.parametrize("preload", [True, False])
def test_nan_inf_pixels_and_odd_label_values_become_nodata_and_are_ignored(tmp_path, preload):
    write_accepted_inputs(tmp_path, "val", patches=1)
    dataset = BandPatchDataset(tmp_path, "val", BANDS, train=False, image_size=SIZE, preload=preload)
    _, target_vv, _ = dataset[0]  # a float32 label holding rows of -1, 2, 7, 255 and NaN
    image_vh, target_vh, _ = dataset[1]
    for row in range(len(ODD_LABELS)):
        assert (target_vv[0, 10 + row] == IGNORE_INDEX).all() and (target_vh[0, 10 + row] == IGNORE_INDEX).all()
    assert (target_vh[0, 3] == IGNORE_INDEX).all() and (target_vh[0, 4:6, :5] == IGNORE_INDEX).all()
    assert (target_vv[0, 3] != IGNORE_INDEX).all()  # NaN in VH leaves the VV item alone
    assert torch.isfinite(image_vh).all() and image_vh.min() >= 0 and image_vh.max() <= 1
    # ignored pixels take no part in the loss: whatever the model predicts there, the loss is the same
    loss = FocalTverskyLoss()
    logits = torch.randn(1, *target_vh.shape)
    changed = torch.where(target_vh[None] == IGNORE_INDEX, torch.tensor(1e4), logits)
    assert torch.isfinite(loss(logits, target_vh[None])) and torch.equal(loss(logits, target_vh[None]),
                                                                          loss(changed, target_vh[None]))
    all_nodata = torch.full_like(target_vh[None], IGNORE_INDEX)
    assert torch.isfinite(loss(logits, all_nodata))


def test_accepted_inputs_train_with_a_finite_loss_and_report_the_skips(tmp_path, capsys):
    from lib.train.engine import train
    root = tmp_path / "data"
    write_accepted_inputs(root, "train", patches=8)
    write_accepted_inputs(root, "val", patches=2)
    (root / "train" / "lab" / "label_only.npy").write_bytes((root / "train" / "lab" / "p1.npy").read_bytes())
    (root / "train" / "img" / "band_only_VV.npy").write_bytes((root / "train" / "img" / "p1_VV.npy").read_bytes())
    constants = tiny_constants(root, tmp_path / "run", TRAIN_BANDS=BANDS, VAL_BANDS=BANDS)
    summary = train(constants, "UnetLight", {"width": 4})
    out = capsys.readouterr().out
    assert "train: 8 patches; skipped 2 (band files without label: 1, label without band files: 1)" in out
    assert summary["data"]["skipped"]["train"] == {"label without band files": 1, "band files without label": 1}
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 1 and all(math.isfinite(float(rows[0][k])) for k in ("train_loss", "val_loss", "val_iou"))


# ------------------------------------------------------------------------------ failures inside workers

class FailingDataset(Dataset):
    def __init__(self, message: str):
        self.message = message

    def __len__(self):
        return 4

    def __getitem__(self, item):
        raise DataError(self.message)


def test_file_broken_after_indexing_fails_in_a_worker_with_a_clean_message(tmp_path):
    make_split(tmp_path, "train", patches=[f"p{i}" for i in range(4)])
    dataset = BandPatchDataset(tmp_path, "train", BANDS, train=True, image_size=SIZE, preload=False)
    victim = tmp_path / "train" / "lab" / "p2.npy"
    truncate(victim)  # passed the header check; now every read of it fails
    with pytest.raises(DataError) as found:
        list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert "Original Traceback" in str(found.value)  # it was raised in a worker
    assert clean_message(found.value).startswith(f"{victim}: not a readable .npy array (ValueError: Failed to read")


def test_multiline_message_from_a_worker_keeps_the_file_name():
    """clean_message used to keep only the last line of a worker's message, which can drop the file name."""
    message = "/data/train/img/p7_VV.npy: first line of the problem\nsecond line of the problem"
    with pytest.raises(DataError) as found:
        list(DataLoader(FailingDataset(message), batch_size=4, num_workers=1))
    assert "Original Traceback" in str(found.value) and clean_message(found.value) == message


# ------------------------------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", b"\x00" * 64, b"PK\x03\x04broken zip"])
def test_checkpoint_that_is_not_a_checkpoint_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: "):
        read_checkpoint(path)


# --------------------------------------------------------------------------- the real user path: scripts

SCRIPT = "train_unetlight.py"
SCRIPT_ARGS = ["EPOCHS=1", "IMAGE_SIZE=64", "BATCH_SIZE=4", "DEVICE=cpu", "WIDTH=4", "WARMUP_EPOCHS=1"]

# Runs the train script, but truncates one file right after the datasets are built: the file passes the header
# check at start, and the first read of it happens in a DataLoader worker.
TRUNCATE_AFTER_INDEXING = """
import os, runpy, sys
import lib.train.engine
build_datasets = lib.train.engine.build_datasets

def build_then_truncate(c, log=print):
    datasets = build_datasets(c, log)
    victim = os.environ["BAD_INPUT_TRUNCATE"]
    with open(victim, "r+b") as handle:
        handle.truncate(os.path.getsize(victim) // 2)
    return datasets

lib.train.engine.build_datasets = build_then_truncate
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

SCRIPT_CASES = {}


def script_case(function):
    """A case returns (arguments, fragments the error line must hold[, environment]) or a skip reason."""
    SCRIPT_CASES[function.__name__.removeprefix("case_")] = function
    return function


@script_case
def case_missing_data_root(tmp: Path, tiny: Path):
    root = tmp / "no_such_data"
    return [f"DATA_ROOT={root}", "NUM_WORKERS=0"], [f"DATA_ROOT '{root}' does not exist", "python make_demo_data.py"]


@script_case
def case_object_array(tmp: Path, tiny: Path):
    root = Path(shutil.copytree(tiny, tmp / "data"))
    victim = root / "train" / "img" / "demo_00002_VV.npy"
    object_array(victim)
    return [f"DATA_ROOT={root}", "NUM_WORKERS=0"], [f"{victim}: refused: an object array"]


@script_case
def case_file_truncated_after_indexing_read_in_a_worker(tmp: Path, tiny: Path):
    root = Path(shutil.copytree(tiny, tmp / "data"))
    victim = root / "train" / "lab" / "demo_00003.npy"
    return ([f"DATA_ROOT={root}", "NUM_WORKERS=2", "PRELOAD=false"],
            [f"{victim}: not a readable .npy array (ValueError: Failed to read all data"],
            {"BAD_INPUT_TRUNCATE": str(victim)})


@script_case
def case_unknown_constant(tmp: Path, tiny: Path):
    return [f"DATA_ROOT={tiny}", "EPOCH=1"], ["unknown constant 'EPOCH'. Valid names: WIDTH,", "EPOCHS"]


@script_case
def case_wrong_type(tmp: Path, tiny: Path):
    return [f"DATA_ROOT={tiny}", "EPOCHS=abc"], ["EPOCHS='abc': expected an integer"]


@script_case
def case_resume_from_garbage_checkpoint(tmp: Path, tiny: Path):
    (tmp / "out").mkdir()
    last = tmp / "out" / "last.pt"
    last.write_bytes(np.random.default_rng(2).bytes(2048))
    return [f"DATA_ROOT={tiny}", "NUM_WORKERS=0", "RESUME=1"], [f"{last}: "]


@script_case
def case_resume_from_a_best_pt_copied_to_last_pt(tmp: Path, tiny: Path):
    from lib.checkpoint import FORMAT, save_checkpoint
    last = tmp / "out" / "last.pt"  # a checkpoint of weights only, like best.pt: no training_state
    save_checkpoint({"format": FORMAT, "model": {"name": "UnetLight", "args": {"width": 4}}, "epoch": 3,
                     "state_dict": {}}, last)
    return [f"DATA_ROOT={tiny}", "NUM_WORKERS=0", "RESUME=1"], [f"{last}: holds no training state", "like best.pt"]


@script_case
def case_output_dir_that_is_a_file(tmp: Path, tiny: Path):
    path = tmp / "runs"
    path.write_text("a file where the output folder should be")
    return [f"DATA_ROOT={tiny}", "NUM_WORKERS=0", f"OUTPUT_DIR={path}"], [f"OUTPUT_DIR {path}: is a file, not a folder"]


@script_case
def case_kompsat5_tiff_that_is_not_a_tiff(tmp: Path, tiny: Path):
    try:
        from lib.data.kompsat5 import build_kompsat5_datasets  # noqa: F401
        from lib.synthetic.kompsat5 import make_kompsat5_dataset
    except ImportError as error:
        return f"KOMPSAT-5 layout not available yet (lib/data/kompsat5/: {error})"
    root = tmp / "data_k5"
    make_kompsat5_dataset(root, n_train=2, n_val=1, size=SIZE, seed=0)
    image = (root / "train_full" / "train.txt").read_text().splitlines()[0].split("\t")[0]
    victim = root / image
    victim.write_bytes(b"II*\x00" + np.random.default_rng(3).bytes(1024))  # TIFF magic, garbage after it
    return ([f"DATA_ROOT={root}", "DATA_FORMAT=kompsat5", "TRAIN_LIST=train_full/train.txt",
             "VAL_LIST=train_full/val.txt", "NUM_WORKERS=0"], [f"{victim}: "])


@script_case
def case_constant_out_of_range(tmp: Path, tiny: Path):
    # refused when the constants are loaded, before any data is read or OUTPUT_DIR is made
    return [f"DATA_ROOT={tiny}", "BATCH_SIZE=0"], ["BATCH_SIZE='0': expected an integer >= 1"]


@script_case
def case_constant_none_where_it_means_nothing(tmp: Path, tiny: Path):
    return [f"DATA_ROOT={tiny}", "IMAGE_SIZE=None"], ["IMAGE_SIZE=None: expected an integer >= 8"]


@script_case
def case_band_without_normalization_range(tmp: Path, tiny: Path):
    return [f"DATA_ROOT={tiny}", "VAL_BANDS=VV,XX"], ["VAL_BANDS='VV,XX'", "normalization range", "BAND_RANGES"]

def run_case(case: str, tmp: Path, tiny: Path):
    setup = SCRIPT_CASES[case](tmp, tiny)
    if isinstance(setup, str):
        return setup
    args, fragments, *extra = setup
    env = {**os.environ, **(extra[0] if extra else {})}
    prefix = ["-c", TRUNCATE_AFTER_INDEXING] if "BAD_INPUT_TRUNCATE" in env else []
    command = [sys.executable, *prefix, SCRIPT, *SCRIPT_ARGS, f"OUTPUT_DIR={tmp / 'out'}", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return result, fragments


@pytest.fixture(scope="module")
def script_runs(tiny_data, tmp_path_factory) -> dict:
    """Every script case, run at once (three at a time): {case: (CompletedProcess, fragments) or skip reason}."""
    folders = {case: tmp_path_factory.mktemp(f"script_{case}") for case in SCRIPT_CASES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case: pool.submit(run_case, case, folders[case], tiny_data) for case in SCRIPT_CASES}
        return {case: future.exception() or future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", list(SCRIPT_CASES))
def test_train_script_fails_with_one_clean_line_naming_the_problem(script_runs, case):
    run = script_runs[case]
    if isinstance(run, BaseException):  # the case's setup failed, or its run timed out
        raise run
    if isinstance(run, str):
        pytest.skip(run)
    result, fragments = run
    report = f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 1, report
    assert "Traceback" not in result.stderr, report
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, report
    for fragment in fragments:
        assert fragment in errors[0], report
    if case.startswith(("constant_", "band_without")):
        assert "data " not in result.stdout, report  # refused before the datasets were built
    if case == "file_truncated_after_indexing_read_in_a_worker":
        assert "train: 8 patches" in result.stdout, report  # the file passed the check at start
