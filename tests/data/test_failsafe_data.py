"""Fail safe, second round (issue 25) for the data tools: make_demo_data.py never mixes demo patches into
another dataset, prepare_data.py reads nothing silently wrong, and their failures are one error line."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from lib.cli import run
from lib.errors import OutputError
from lib.synthetic.demo import make_demo_dataset


def run_main(monkeypatch, capsys, main, argv: list[str], code: int = 1) -> str:
    """A tool run as its command line runs it; returns stderr after asserting the exit status."""
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == code
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------ make_demo_data.py

def real_dataset(root):
    for split in ("train", "val"):
        for folder in ("img", "lab"):
            (root / split / folder).mkdir(parents=True)
        np.save(root / split / "img" / "chip_1_VV.npy", np.zeros((16, 16), np.float32))
        np.save(root / split / "lab" / "chip_1.npy", np.zeros((16, 16), np.uint8))
    return sorted(p.relative_to(root) for p in root.rglob("*.npy"))


def test_demo_data_into_a_real_dataset_is_refused_and_adds_nothing(tmp_path, monkeypatch, capsys):
    import make_demo_data
    files = real_dataset(tmp_path / "data")
    err = run_main(monkeypatch, capsys, make_demo_data.main,
                   ["make_demo_data.py", "--out", str(tmp_path / "data"), "--train", "2", "--val", "1", "--size", "16"])
    assert err.startswith(f"error: {tmp_path / 'data'}: holds 4 patch file(s) that are not demo data") and "--overwrite" in err
    assert sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*.npy")) == files


def test_demo_data_overwrite_replaces_the_dataset_and_a_rerun_replaces_its_own_patches(tmp_path):
    real_dataset(tmp_path / "data")
    summary = make_demo_dataset(tmp_path / "data", n_train=2, n_val=1, size=16, overwrite=True)
    assert summary["removed"] == 4 and not list((tmp_path / "data").rglob("chip_*"))
    again = make_demo_dataset(tmp_path / "data", n_train=2, n_val=1, size=16)  # its own patches: no flag needed
    assert again["removed"] == 0


def test_demo_data_onto_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        make_demo_dataset(tmp_path / "file", n_train=2, n_val=1, size=16)
