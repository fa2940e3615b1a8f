"""The table at the end of a distillation run: teacher, distilled student(s), the same student trained alone
(found under runs/ by `find_scratch_run`) and the threshold baseline, with parameters and, with COST_TABLE,
GFLOPs and CPU latency."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from lib.bench.cost import model_cost
from lib.checkpoint import plain
from lib.config import Constants, as_constants
from lib.data.factory import data_settings
from lib.models.factory import build_model
from lib_kd.model_kd import Teacher, full_args, train_command, train_script


def _same_path(a, b) -> bool:
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def validation_identity(c: dict, data: dict | None = None) -> dict:
    """What defines a run's validation items (and the data its student learnt from): data root, format, bands,
    image size, normalization and, for the KOMPSAT-5 layout, the list files (two folds share DATA_ROOT).
    `data`: the run's recorded data settings (summary.json), else those the constants give now."""
    c = as_constants(c)
    data = plain(data if data is not None else data_settings(c))
    root = Path(str(c["DATA_ROOT"])).expanduser().resolve()
    identity = {"DATA_ROOT": str(root), **{key: value for key, value in data.items() if key in DATA_SETTING_KEYS}}
    if c["DATA_FORMAT"] == "kompsat5":
        identity.update({name: str((root / str(c[name])).resolve()) for name in ("TRAIN_LIST", "VAL_LIST")})
    return identity


DATA_SETTING_KEYS = ("format", "train_bands", "val_bands", "image_size", "normalization", "calibration_db")


def matched_on(c: dict) -> str:
    """The table's note on why the student-alone run is comparable."""
    lists = f", TRAIN_LIST {c['TRAIN_LIST']}, VAL_LIST {c['VAL_LIST']}" if c["DATA_FORMAT"] == "kompsat5" else ""
    return (f"same student and arguments, EPOCHS {c['EPOCHS']}, DATA_ROOT {c['DATA_ROOT']} ({c['DATA_FORMAT']}){lists}, "
            f"bands, image size and normalization")


def find_scratch_run(c: dict, name: str, args: dict, search: list[Path] | None = None) -> Path | None:
    """The newest summary.json of a plain (not distilled) run of the same student for the same EPOCHS, trained
    and validated on the same items (validation_identity: on the KOMPSAT-5 layout the same list files, so
    another fold of the same DATA_ROOT does not match), under runs/ and beside OUTPUT_DIR."""
    output_dir = Path(c["OUTPUT_DIR"])
    folders = search if search is not None else list(dict.fromkeys([Path("runs"), output_dir.parent]))
    wanted = full_args(name, args)
    identity = validation_identity(c)
    found = []
    for folder in folders:
        for path in Path(folder).glob("*/summary.json"):
            if _same_path(path.parent, output_dir):
                continue
            try:
                run = json.loads(path.read_text())
                matches = (run.get("teacher_checkpoint") is None and run["model"] == name
                           and full_args(name, run["model_args"]) == wanted and run["constants"]["EPOCHS"] == c["EPOCHS"]
                           and validation_identity({**run["constants"], "DATA_ROOT": run["data"]["root"]},
                                                   run["data"]) == identity)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if matches:
                found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def mean_epoch_time(run_dir: Path) -> float | None:
    try:
        with open(run_dir / "history.csv", newline="") as handle:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return None
    return sum(times) / len(times) if times else None


def comparison_table(c: Constants | dict, summary: dict | list[tuple[str, dict, Path]], teacher: Teacher,
                     teacher_val: dict, cost: bool = True) -> str:
    """Teacher, distilled student(s), the same student trained alone (when such a run exists) and the
    threshold baseline (when the student's summary holds one): per-band validation IoU, parameters held and
    used, the used-parameter ratio to the teacher, and with `cost` GFLOPs per patch and CPU latency at batch
    1 and 32. `summary` is one distilled run's summary, or (label, summary, run folder) rows of a sweep."""
    c = as_constants(c)
    bands = list(c["VAL_BANDS"])
    students = summary if isinstance(summary, list) else [
        (f"student {summary['model']} distilled", summary, Path(c["OUTPUT_DIR"]))]
    first = students[0][1]
    name, args = first["model"], first["model_args"]
    scratch_path = find_scratch_run(c, name, args)
    scratch = json.loads(scratch_path.read_text()) if scratch_path else None
    table = Table(bands, teacher.parameters["used"], int(c["IMAGE_SIZE"]), cost)
    table.add(f"teacher {teacher.name}", [teacher_val.get(f"iou_{b}") for b in bands] + [teacher_val.get("iou")],
              teacher.parameters, mean_epoch_time(teacher.path.parent),
              table.cost_of("teacher", lambda: teacher.model) if cost else None)
    for label, run, run_dir in students:
        table.add(label, [run.get(f"val_iou_{b}") for b in bands] + [run.get("val_iou")], run["parameters"],
                  mean_epoch_time(run_dir), table.student_cost(run))
    if scratch:
        table.add(f"student {name} alone", [scratch.get(f"val_iou_{b}") for b in bands] + [scratch.get("val_iou")],
                  scratch["parameters"], mean_epoch_time(scratch_path.parent), table.student_cost(scratch))
    baseline = first.get("baseline")
    if isinstance(baseline, dict):
        per_band = baseline.get("bands") or {}
        table.add(f"{baseline.get('method', 'threshold')} baseline (fitted on {baseline.get('fitted_on', '?')})",
                  [(per_band.get(b) or {}).get("iou") for b in bands] + [baseline.get("iou")], None, None)
    lines = [f"Distillation: {c['EPOCHS']} epoch(s) on {c['DATA_ROOT']}; validation IoU at each run's best epoch",
             *table.lines()]
    return "\n".join(lines + table_notes(c, scratch_path, name, args, teacher, cost))


class Table:
    """The comparison table's header and rows; each model's cost (lib.bench.cost.model_cost) measured once."""

    def __init__(self, bands: list[str], teacher_used: int, size: int, cost: bool):
        self.teacher_used, self.size, self.cost = teacher_used, size, cost
        self.header = ["run", *[f"IoU {b}" for b in bands], "IoU mean", "params held", "params used", "used/teacher"]
        if cost:
            self.header += ["GFLOPs", "ms b1", "ms b32"]
        self.header.append("s/epoch")
        self.rows: list[list[str]] = []
        self.costs: dict[str, dict] = {}

    def cost_of(self, key: str, build) -> dict:
        if key not in self.costs:
            self.costs[key] = model_cost(build(), self.size)
        return self.costs[key]

    def student_cost(self, run: dict) -> dict | None:
        if not self.cost:
            return None
        key = json.dumps([run["model"], run["model_args"]], sort_keys=True, default=str)
        return self.cost_of(key, lambda: build_model(run["model"], run["model_args"]))

    def add(self, label, ious, params, seconds, measured=None) -> None:
        cells = [label, *[f"{v:.3f}" if isinstance(v, (int, float)) else "-" for v in ious]]
        if params:
            cells += [f"{params['held']:,}", f"{params['used']:,}", f"{params['used'] / max(self.teacher_used, 1):.2f}x"]
        else:
            cells += ["-", "-", "-"]
        if self.cost:
            cells += ([f"{measured['gflops']:.3g}", f"{measured['latency_ms_b1']:.1f}", f"{measured['latency_ms_b32']:.1f}"]
                      if measured else ["-", "-", "-"])
        cells.append(f"{seconds:.1f}" if seconds is not None else "-")
        self.rows.append(cells)

    def lines(self) -> list[str]:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]

        def fmt(cells):
            return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))
        return [fmt(self.header), *[fmt(r) for r in self.rows]]


def table_notes(c: Constants, scratch_path: Path | None, name: str, args: dict, teacher: Teacher, cost: bool) -> list[str]:
    """The lines under the comparison table: where the student-alone run is (or how to train it), and what the
    columns count."""
    size, t_used = int(c["IMAGE_SIZE"]), teacher.parameters["used"]
    if scratch_path:
        lines = [f"student alone: {scratch_path} (matches: {matched_on(c)})"]
    else:
        command = train_command(train_script(name), c, args, keys=("EPOCHS",))
        lines = [f"student alone: not found: train it with `{command}` and run kd.py again for the comparison"]
    lines.append(f"used/teacher: parameters used in the forward pass, student / teacher; the teacher holds "
                 f"{teacher.parameters['held']:,} but its forward pass uses {t_used:,}, so the ratio counts used ones")
    if cost:
        lines.append(f"GFLOPs: one forward pass on one {size} x {size} patch (torch.utils.flop_counter); ms b1 / b32: "
                     f"CPU milliseconds per forward pass of a batch of 1 / 32, fp32 eager, {torch.get_num_threads()} "
                     f"thread(s), fastest of a few short runs (benchmark.py measures at length)")
    return lines
