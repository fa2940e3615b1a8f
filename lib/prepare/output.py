"""The output folder: built in a hidden staging folder beside --out and renamed into place at the end, so a
run that fails leaves no half-written --out and an existing one untouched; patch files; prepare.json."""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from lib.errors import ConfigError, OutputError


def has_data(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_out(out: Path, source: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a folder")
    if source.resolve() == out.resolve() or out.resolve() in source.resolve().parents:
        raise ConfigError(f"--out {str(out)!r} holds SOURCE {str(source)!r}; writing there would replace the source")
    if has_data(out) and not overwrite:
        raise ConfigError(f"--out {str(out)!r} already holds data; pass --overwrite to replace it "
                          f"(it is replaced only once the new data is complete)")


def staging_folder(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as error:
        raise OutputError(f"cannot write beside --out {str(out)!r}: {error}") from None


def commit(staging: Path, out: Path) -> None:
    """Put the finished staging folder at `out`; an old `out` is moved aside first, removed only after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the folds share one copy of each patch on disk), or a copy where links do not work."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_patch(root: Path, splits: list[str], patch_id: str, bands: dict[str, np.ndarray], label: np.ndarray
                ) -> list[Path]:
    """`{split}/img/{patch_id}_{band}.npy` (float32) and `{split}/lab/{patch_id}.npy` (uint8) in the first
    split, hard links in the others; returns every path written."""
    first = root / splits[0]
    files = [(first / "img" / f"{patch_id}_{band}.npy", np.asarray(array, dtype=np.float32)) for band, array in bands.items()]
    files.append((first / "lab" / f"{patch_id}.npy", np.asarray(label, dtype=np.uint8)))
    written = []
    for path, array in files:
        save_npy(path, np.ascontiguousarray(array))
        written.append(path)
        for split in splits[1:]:
            written.append(root / split / path.relative_to(first))
            link_or_copy(path, written[-1])
    return written


def versions() -> dict:
    import matplotlib
    import rasterio
    return {"python": platform.python_version(), "numpy": np.__version__, "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__, "matplotlib": matplotlib.__version__, "platform": sys.platform}


def write_json(path: Path, content: dict) -> None:
    """Written to a temporary file and renamed, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(content, indent=1, default=str) + "\n")
    os.replace(partial, path)
