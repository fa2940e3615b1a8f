"""The distillation study (kd_study.py): each student alone and with each method, several seeds, one table.

Every run is a plain command (`python train_<student>.py ...` or `python kd.py ...`) in its own process,
as train_folds.py runs folds, into OUTPUT_DIR/<student>/<method>/seed<k>; a run whose summary.json is
complete is not trained again (delete its folder to rerun it). The table gives, per student and method,
the mean and spread of the best validation IoU over seeds, and the gap to the teacher.
"""
from __future__ import annotations

import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from lib.errors import ConfigError, TrainingError
from lib_kd.model_kd import (INHERITED_DATA, PSPMIXER_CONSTANTS, ROOT, inherit_teacher_data, script_defaults,
                             train_script, value_text)

STUDY_OWN = ("TEACHER_CHECKPOINT", "STUDENTS", "METHODS", "SEEDS", "OUTPUT_DIR", "DRY_RUN", "REAL_DATA", "TEACHERS", "TABLE_ONLY")


def as_list(value, name: str, cast=str) -> list:
    """A constant given as a list or as comma-separated text ("PSPMixer,UnetLight")."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [cast(item.strip() if isinstance(item, str) else item) for item in items if str(item).strip()]
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a comma-separated list") from None


def teacher_data(c: dict, passed: dict) -> dict:
    """TRAIN_BANDS, VAL_BANDS, IMAGE_SIZE and NORMALIZATION as kd.py resolves them (the teacher's, unless
    passed), as text: a student trained alone must see the data its distilled twins see."""
    names = (*INHERITED_DATA, "NORMALIZATION")
    resolved = inherit_teacher_data({"TEACHER_CHECKPOINT": c.get("TEACHER_CHECKPOINT", ""),
                                     **{name: passed.get(name) for name in names}})
    return {name: passed.get(name, value_text(resolved[name])) for name in names}


def run_command(student: str, method: str, overrides: dict | None, seed: int, output: Path, c: dict,
                passed: dict) -> list[str]:
    """The command of one run: the student's train script for "alone" (overrides None), else kd.py."""
    script = train_script(student) if overrides is None else "kd.py"
    own = script_defaults(ROOT / script)
    wanted = {**passed, "SEED": seed, "OUTPUT_DIR": str(output)}
    if overrides is None:  # the train script's own defaults (seven bands) are not what kd.py takes
        wanted = {**teacher_data(c, passed), **wanted}
    else:
        wanted.update({"TEACHER_CHECKPOINT": c["TEACHER_CHECKPOINT"], "STUDENT": student, **overrides})
    if student != "PSPMixer":  # kd.py's PATCH ... are PSPMixer's; another student takes its own defaults
        wanted = {k: v for k, v in wanted.items() if k not in PSPMIXER_CONSTANTS.values()}
    elif overrides is None:  # PSPMixer alone is the student kd.py distils: kd.py's PATCH, HIDDEN, ... by default
        kd = script_defaults(ROOT / "kd.py")
        wanted = {**{k: kd[k] for k in PSPMIXER_CONSTANTS.values()}, **wanted}
    unknown = [k for k in wanted if k not in own]
    if unknown and overrides is not None:
        raise ConfigError(f"METHODS[{method!r}]: kd.py has no constant {', '.join(unknown)}")
    return [sys.executable, script, *(f"{k}={v}" for k, v in wanted.items() if k in own)]


def done(output: Path, epochs: int, patience: int) -> dict | None:
    """The summary of a finished run in `output` (trained for EPOCHS, or stopped early), else None."""
    try:
        summary = json.loads((output / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    run = summary.get("epochs_run", 0)
    finished = run == epochs or run - summary.get("best_epoch", 0) >= patience
    return summary if finished and "val_iou" in summary else None


def run_study(c: dict, passed: dict) -> list[dict]:
    """Train every (student, method, seed) not yet done; returns one result row per run."""
    students = as_list(c["STUDENTS"], "STUDENTS")
    seeds = as_list(c["SEEDS"], "SEEDS", int)
    methods = c["METHODS"]
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"METHODS={methods!r}: expected a dict of method name -> kd.py overrides (None: alone)")
    kd_defaults = script_defaults(ROOT / "kd.py")
    epochs = int(passed.get("EPOCHS", kd_defaults.get("EPOCHS")))
    patience = int(passed.get("PATIENCE", kd_defaults.get("PATIENCE")))
    rows, skipped = [], 0
    for student in students:
        for method, overrides in methods.items():
            for seed in seeds:
                output = Path(c["OUTPUT_DIR"]) / student.lower() / method / f"seed{seed}"
                summary = done(output, epochs, patience)
                command = run_command(student, method, overrides, seed, output, c, passed)
                if summary is None and not c["DRY_RUN"]:
                    print(f"\n=== {student} {method} seed {seed}: {shlex.join(command)}", flush=True)
                    result = subprocess.run(command, cwd=ROOT)
                    if result.returncode != 0:
                        raise TrainingError(f"{student} {method} seed {seed} failed (exit status {result.returncode}); "
                                            f"runs before it are kept, rerun kd_study.py to continue")
                    summary = done(output, epochs, patience) or json.loads((output / "summary.json").read_text())
                elif summary is not None:
                    skipped += 1
                else:
                    print(shlex.join(command))
                if summary is not None:
                    rows.append({"student": student, "method": method, "seed": seed, "output": str(output),
                                 "val_iou": summary.get("val_iou"),
                                 "teacher_iou": (summary.get("teacher_val") or {}).get("iou")})
    if skipped:
        print(f"{skipped} run(s) already done, not trained again (delete their folders to rerun)")
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Per (student, method): seeds, mean, sample standard deviation (ddof 1), min, max, teacher IoU, gap."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["student"], row["method"]), []).append(row)
    teacher = next((r["teacher_iou"] for r in rows if r["teacher_iou"] is not None), None)
    result = []
    for (student, method), items in groups.items():
        values = [r["val_iou"] for r in items if r["val_iou"] is not None]
        mean = statistics.fmean(values) if values else None
        alone = next((g for (s, m), g in groups.items() if s == student and m == "alone"), None)
        alone_mean = statistics.fmean(r["val_iou"] for r in alone) if alone else None
        result.append({"student": student, "method": method, "seeds": len(values), "mean": mean,
                       "std": statistics.stdev(values) if len(values) > 1 else None,
                       "min": min(values) if values else None, "max": max(values) if values else None,
                       "teacher": teacher, "gap_to_teacher": None if mean is None or teacher is None else teacher - mean,
                       "gain_over_alone": None if mean is None or alone_mean is None else mean - alone_mean})
    return result


def render(table: list[dict], title: str) -> str:
    fmt = lambda v: "-" if v is None else f"{v:+.3f}" if isinstance(v, float) and v < 0 else f"{v:.3f}"  # noqa: E731
    header = ["student", "method", "seeds", "IoU mean", "std", "min", "max", "teacher", "gap", "vs alone"]
    rows = [[r["student"], r["method"], str(r["seeds"]), fmt(r["mean"]), fmt(r["std"]), fmt(r["min"]), fmt(r["max"]),
             fmt(r["teacher"]), fmt(r["gap_to_teacher"]),
             "-" if r["gain_over_alone"] is None else f"{r['gain_over_alone']:+.3f}"] for r in table]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([title, line(header), *map(line, rows),
                      "std: sample standard deviation over seeds (ddof 1); gap: teacher - mean; "
                      "vs alone: mean - the student alone's mean"])


def write_results(rows: list[dict], table: list[dict], output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "study.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["student"])
        writer.writeheader()
        writer.writerows(table)
    (output_dir / "study.json").write_text(json.dumps({"runs": rows, "table": table}, indent=2))
