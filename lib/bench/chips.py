"""Leave-one-chip-out folds of a prepared dataset (benchmark_real.py): the patches of each chip, found by
their ids, and one fold folder per held-out chip made of links.

prepare_data.py names every patch `{chip}_r{i}c{j}` (the window at row i, column j of its chip), so the
chip of a patch is its id without the `_r{i}c{j}` tail. A fold is `FOLD/train/{img,lab}` (links to the
patches of every other chip) and `FOLD/val/{img,lab}` (links to the held-out chip's), the layout the
training scripts read: no data is copied, and the dataset itself is never changed.
"""
from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lib.errors import DataError, OutputError, os_error_text
from lib.prepare.splits import group_of

PATCH_ID = re.compile(r"^(?P<chip>.+)_r\d+c\d+$")


@dataclass
class Patch:
    patch_id: str
    label: Path
    bands: dict[str, Path]   # band name -> img/{patch_id}_{band}.npy


def split_folders(root: Path) -> list[Path]:
    """Every folder below `root` (itself included) holding img/ and lab/: train, val, fold_k/val, ..."""
    if not root.is_dir():
        raise DataError(f"DATA_ROOT {str(root)!r} is not a folder (prepare one with prepare_data.py)")
    found = [lab.parent for lab in sorted(root.rglob("lab")) if lab.is_dir() and (lab.parent / "img").is_dir()]
    if not found:
        raise DataError(f"DATA_ROOT {str(root)!r}: no split folder with img/ and lab/ below it "
                        f"(the layout prepare_data.py writes)")
    return found


def band_files(img_dir: Path) -> dict[str, dict[str, Path]]:
    """{patch_id: {band: path}} of an img/ folder ({patch_id}_{band}.npy, as lib/data/dataset.py reads it)."""
    files: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(img_dir.glob("*.npy")):
        patch_id, sep, band = path.stem.rpartition("_")
        if sep:
            files[patch_id][band] = path
    return files


def find_groups(root: Path, group_by: str = "chip") -> dict[str, list[Patch]]:
    """{group: its patches} over every split of `root`; a patch in several splits (k-fold layouts link one
    file into many) counts once. group_by: "chip", "region" or a regex, as prepare_data.py's --group-by."""
    groups: dict[str, list[Patch]] = defaultdict(list)
    seen = set()
    for split in split_folders(root):
        files = band_files(split / "img")
        for label in sorted((split / "lab").glob("*.npy")):
            patch_id = label.stem
            if patch_id in seen:
                continue
            match = PATCH_ID.match(patch_id)
            if not match:
                raise DataError(f"{label}: patch id {patch_id!r} does not end in _r<i>c<j>, so its chip is unknown; "
                                f"prepare the data with prepare_data.py (patch ids {{chip}}_r{{i}}c{{j}})")
            if not files.get(patch_id):
                raise DataError(f"{label}: no band file {split / 'img' / patch_id}_<band>.npy beside it")
            seen.add(patch_id)
            groups[group_of(match["chip"], group_by)].append(Patch(patch_id, label, files[patch_id]))
    if len(groups) < 2:
        raise DataError(f"DATA_ROOT {str(root)!r}: {len(groups)} chip(s) (GROUP_BY={group_by}); leaving one out "
                        f"needs at least two")
    return dict(sorted(groups.items()))


def link_fold(groups: dict[str, list[Patch]], held_out: str, folder: Path) -> dict[str, int]:
    """Make `folder` the fold that holds out `held_out` (rebuilt each time: it holds only links);
    returns the patches per split."""
    try:
        if folder.exists():
            shutil.rmtree(folder)
        sizes = {}
        for split, names in (("train", [g for g in groups if g != held_out]), ("val", [held_out])):
            (folder / split / "img").mkdir(parents=True)
            (folder / split / "lab").mkdir()
            patches = [patch for name in names for patch in groups[name]]
            for patch in patches:
                os.symlink(patch.label.resolve(), folder / split / "lab" / f"{patch.patch_id}.npy")
                for band, path in patch.bands.items():
                    os.symlink(path.resolve(), folder / split / "img" / f"{patch.patch_id}_{band}.npy")
            sizes[split] = len(patches)
    except OSError as error:
        raise OutputError(f"{folder}: cannot make the fold's links ({os_error_text(error)})") from None
    return sizes
