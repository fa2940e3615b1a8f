"""The distillation study on real chips (kd_study.py REAL_DATA=...): every run leaves one chip out.

Each (student, method, seed) is one `python benchmark_real.py REAL_DATA ...` into
OUTPUT_DIR/<student>/<method>/seed<k>: "alone" with the student's train script, a method with kd.py and
TEACHERS (a teacher's benchmark_real OUTPUT_DIR on the same chips), so that every fold is distilled from
the teacher that never saw its held-out chip. Every fold is scored on its held-out chip at the last epoch;
benchmark_real.py skips folds already scored. The table gives, per student and method, the IoU pooled over
the held-out chips and the mean over the chips with water (each the mean of the validation bands), over
seeds, beside the teacher's and the threshold's (fitted on the training chips) of the same folds.
"""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from lib.cli import split_argument
from lib.errors import ConfigError, TrainingError
from lib_kd.model_kd import ROOT
from lib_kd.study import as_list, run_command

# what benchmark_real.py sets on every fold itself
FOLD_OWN = ("DATA_ROOT", "OUTPUT_DIR", "TEACHER_CHECKPOINT")


def first_teacher(teachers: Path) -> Path:
    """A fold teacher's checkpoint: the data settings (bands, size, normalization) the students take."""
    found = sorted(teachers.glob("*/run/last.pt"))
    if not (teachers / "benchmark_real.json").is_file() or not found:
        raise ConfigError(f"TEACHERS={str(teachers)!r}: not a finished benchmark_real.py run (no benchmark_real.json "
                          f"and <chip>/run/last.pt); run e.g. `python benchmark_real.py REAL_DATA SCRIPT=train_pspnet.py "
                          f"OUTPUT_DIR={teachers}` first")
    return found[0]


def real_command(student: str, method: str, overrides: dict | None, seed: int, output: Path, c: dict,
                 passed: dict) -> list[str]:
    """benchmark_real.py over REAL_DATA with the run kd_study.py would make on one dataset."""
    teachers = Path(str(c["TEACHERS"]))
    single = run_command(student, method, overrides, seed, output, {**c, "TEACHER_CHECKPOINT": str(first_teacher(teachers))},
                         passed)
    script, constants = single[1], [a for a in single[2:] if split_argument(a)[0] not in FOLD_OWN]
    command = [sys.executable, str(ROOT / "benchmark_real.py"), str(c["REAL_DATA"]), f"SCRIPT={script}", f"OUTPUT_DIR={output}"]
    if overrides is not None:
        command.append(f"TEACHERS={teachers}")
    return command + constants


def band_means(record: dict) -> dict:
    """Pooled and per-chip-mean IoU of the model and the threshold, each the mean over the bands."""
    bands = record["bands"]
    mean = lambda part, key: statistics.fmean(record[part][b][key] for b in bands)  # noqa: E731
    return {"pooled": mean("pooled", "model_iou"), "chip_mean": mean("mean", "model_iou"),
            "threshold": mean("pooled", "threshold_iou"), "threshold_chip_mean": mean("mean", "threshold_iou"),
            "bands": bands}


def read_result(folder: Path) -> dict:
    try:
        return band_means(json.loads((folder / "benchmark_real.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{folder / 'benchmark_real.json'}: missing or unreadable (the run did not finish)") from None


def run_real_study(c: dict, passed: dict) -> tuple[list[dict], dict | None]:
    """Run every (student, method, seed) leave-one-chip-out; (one row per run, the teacher's result)."""
    if not c.get("TEACHERS"):
        raise ConfigError("REAL_DATA needs TEACHERS=<the teacher's benchmark_real OUTPUT_DIR on the same chips>")
    methods = c["METHODS"]
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"METHODS={methods!r}: expected a dict of method name -> kd.py overrides (None: alone)")
    rows = []
    for student in as_list(c["STUDENTS"], "STUDENTS"):
        for method, overrides in methods.items():
            for seed in as_list(c["SEEDS"], "SEEDS", int):
                output = Path(c["OUTPUT_DIR"]) / student.lower() / method / f"seed{seed}"
                command = real_command(student, method, overrides, seed, output, c, passed)
                if c["DRY_RUN"]:
                    print(shlex.join(command))
                    continue
                print(f"\n=== {student} {method} seed {seed}: {shlex.join(command)}", flush=True)
                if subprocess.run(command, cwd=ROOT).returncode != 0:
                    raise TrainingError(f"{student} {method} seed {seed} failed; finished folds are kept, rerun "
                                        f"kd_study.py to continue")
                rows.append({"student": student, "method": method, "seed": seed, "output": str(output),
                             **read_result(output)})
    teacher = None if c["DRY_RUN"] else read_result(Path(str(c["TEACHERS"])))
    return rows, teacher


def finished_runs(output_dir: Path) -> list[dict]:
    """One row per finished run in OUTPUT_DIR/<student>/<method>/seed<k> ("alone" first): the table of
    runs made by several kd_study.py calls (SEEDS=1 for every method, SEEDS=2 for a few)."""
    rows = []
    for path in sorted(output_dir.glob("*/*/seed*/benchmark_real.json")):
        folder = path.parent
        rows.append({"student": folder.parent.parent.name, "method": folder.parent.name,
                     "seed": int(folder.name[len("seed"):]), "output": str(folder), **read_result(folder)})
    return sorted(rows, key=lambda r: (r["student"], r["method"] != "alone"))


def aggregate_real(rows: list[dict], teacher: dict | None) -> list[dict]:
    """Per (student, method): seeds, pooled IoU mean and spread, mean over chips, gap to the teacher, gain
    over the student alone, the threshold."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["student"], row["method"]), []).append(row)
    result = []
    for (student, method), items in groups.items():
        pooled = [r["pooled"] for r in items]
        alone = groups.get((student, "alone"))
        mean = statistics.fmean(pooled)
        result.append({"student": student, "method": method, "seeds": len(items), "pooled": mean,
                       "std": statistics.stdev(pooled) if len(pooled) > 1 else None,
                       "min": min(pooled), "max": max(pooled),
                       "chip_mean": statistics.fmean(r["chip_mean"] for r in items),
                       "teacher": teacher and teacher["pooled"], "teacher_chip_mean": teacher and teacher["chip_mean"],
                       "gap_to_teacher": None if teacher is None else teacher["pooled"] - mean,
                       "gain_over_alone": None if not alone else mean - statistics.fmean(r["pooled"] for r in alone),
                       "threshold": items[0]["threshold"]})
    return result


def render_real(table: list[dict], title: str) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    signed = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    header = ["student", "method", "seeds", "pooled IoU", "std", "min", "max", "mean over chips", "teacher",
              "gap", "vs alone", "threshold"]
    rows = [[r["student"], r["method"], str(r["seeds"]), fmt(r["pooled"]), fmt(r["std"]), fmt(r["min"]), fmt(r["max"]),
             fmt(r["chip_mean"]), fmt(r["teacher"]), signed(r["gap_to_teacher"]), signed(r["gain_over_alone"]),
             fmt(r["threshold"])] for r in table]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    teacher = next((r for r in table if r["teacher"] is not None), None)
    note = "" if teacher is None else f"; the teacher's mean over chips {teacher['teacher_chip_mean']:.3f}"
    return "\n".join([title, line(header), *map(line, rows),
                      "IoU on the held-out chips at the last epoch, mean of the validation bands; pooled: confusion "
                      "counts summed over chips; std: sample standard deviation of the pooled IoU over seeds (ddof 1); "
                      f"gap: teacher - pooled; threshold: fitted on the training chips, pooled{note}"])
