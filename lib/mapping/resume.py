"""What `--resume-batch` may keep: a scene counts as done only when its summary records the settings this
run asks for (checkpoint hash, bands, units, tile, overlap, threshold, TTA, fusion, the flood layers and
polygon settings), as training's RESUME compares what last.pt records; otherwise the batch is refused
before any scene, naming the scene and what differs. Also the scratch files a killed batch (SIGKILL, power
loss) left in the output folder, removed when the batch resumes."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

from lib.errors import InferenceError
from lib.mapping.options import resolve_tile
from lib.mapping.rasters import default_units
from lib.mapping.scene import SceneOptions, resolve_bands

PATH_SETTINGS = ("pre_event", "reference_water", "exclude")
# temporary and scratch names of lib/mapping/outputs.py and products.py: .<stem>.partial-<pid><suffix>,
# .<stem>.scratch-<pid>-<id>.tif (and GDAL's .aux.xml beside them)
SCRATCH_NAME = re.compile(r"^\..+\.(partial|scratch)-(\d+)[-.]")


def requested(scene: Path, options: SceneOptions, data: dict, model_info: dict | None) -> dict:
    """The settings a scene's summary would record if this run mapped it (options already hold its --pre)."""
    bands, _ = resolve_bands([scene], options, data)
    tile, overlap = resolve_tile(options, data)
    return {"checkpoint_sha256": (model_info or {}).get("checkpoint_sha256"), "band": ",".join(bands),
            "units": options.units or default_units(data), "tile": tile, "overlap": overlap,
            "threshold": options.threshold, "tta": options.tta, "fuse": options.fuse,
            "reference_threshold": options.reference_threshold, "min_area_m2": options.min_area_m2,
            "simplify_m": options.simplify_m,
            "pre_event": [str(p) for p in options.pre] if options.pre else None,
            "reference_water": None if options.reference_water is None else str(options.reference_water),
            "exclude": None if options.exclude is None else str(options.exclude)}


def recorded(summary: dict) -> dict:
    """The same settings as a summary recorded them (a key an older summary lacks is left out)."""
    found = {key: summary[key] for key in ("band", "units", "tile", "overlap", "threshold", "tta", "fuse",
                                           "reference_threshold", "min_area_m2", "simplify_m", *PATH_SETTINGS)
             if key in summary}
    model = summary.get("model") or {}
    if "checkpoint_sha256" in model:
        found["checkpoint_sha256"] = model["checkpoint_sha256"]
    return found


def same_path(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same_path, a, b))
    return Path(a).resolve() == Path(b).resolve()


def differences(kept: dict, wanted: dict) -> list[str]:
    """'threshold 0.5, now 0.9' for every recorded setting that differs from what is asked."""
    changed = []
    for key, value in kept.items():
        new = wanted.get(key)
        same = same_path(value, new) if key in PATH_SETTINGS else value == new
        if not same:
            changed.append(f"{key} {value}, now {new}")
    return changed


def read_summary(path: Path) -> dict | None:
    """A scene's summary, or None when it cannot be read (the scene is then mapped again)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def check_kept(scene: Path, summary: dict, wanted: dict) -> None:
    """Refuse to keep a scene mapped with other settings than those asked for now."""
    changed = differences(recorded(summary), wanted)
    if changed:
        raise InferenceError(f"{scene}: --resume-batch would keep its outputs mapped with other settings "
                             f"({'; '.join(changed)}); use another --out-dir, the same settings, or remove that "
                             f"scene's outputs to map it again")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_scratch(out_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the temporary and scratch files of runs that no longer live (a killed batch's leftovers);
    those of a live process on this machine (another rank) are left alone."""
    removed = []
    for path in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        match = SCRATCH_NAME.match(path.name)
        if match and path.is_file() and not pid_alive(int(match.group(2))):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log(f"removed {len(removed)} scratch file(s) an interrupted run left in {out_dir}: "
            + ", ".join(p.name for p in removed[:4]) + (" ..." if len(removed) > 4 else ""))
    return removed
