"""The distillation study: each student alone, with response KD and with each added method, over seeds.

    python train_pspnet.py EPOCHS=30                         # the teacher first: runs/pspnet/best.pt
    python kd_study.py EPOCHS=30                             # runs/kd_study/<student>/<method>/seed<k>
    python kd_study.py EPOCHS=8 IMAGE_SIZE=128 PATCH=16 SEEDS=1,2 STUDENTS=UnetLight
    python kd_study.py REAL_DATA=/tmp/real5 TEACHERS=runs/benchmark_real_pspnet STUDENTS=UnetLight  # leave one chip out

Runs `python train_<student>.py ...` (method "alone") or `python kd.py ...` for every student, method and
seed, one after the other, then prints per student and method the mean best validation IoU over the
seeds, its spread, and the gap to the teacher; writes study.csv and study.json to OUTPUT_DIR. Every
other NAME=value (EPOCHS, DATA_ROOT, IMAGE_SIZE, PATCH, ...) goes to every run; finished runs are not
trained again. With REAL_DATA (a prepared real dataset) every run is a leave-one-chip-out
benchmark_real.py run instead, distilled on each fold from the fold of TEACHERS (a teacher's benchmark_real
OUTPUT_DIR) that held out the same chip, and the table gives the IoU on the held-out chips at the last
epoch (docs/distillation-methods.md#measured-on-real-chips). See docs/distillation-methods.md.
"""
import sys
from pathlib import Path

from lib import cli  # cli.HELP: an UPPER_CASE import would read as one of this script's constants
from lib.cli import run, split_argument
from lib.config import apply_overrides, describe, script_constants
from lib_kd.constants import kd_constants
from lib_kd.real_study import aggregate_real, finished_runs, read_result, render_real, run_real_study
from lib_kd.study import STUDY_OWN, aggregate, render, run_study, write_results

TEACHER_CHECKPOINT = "runs/pspnet/best.pt"
STUDENTS = "PSPMixer,UnetLight"
SEEDS = "1,2"
# method -> kd.py overrides; None: the student trained alone by its own train script
METHODS = {
    "alone": None,
    "response": {},                                        # the published loss
    # feature and CWD at 0.3: at 1 they drove UnetLight to IoU 0 on a real chip (docs/distillation-methods.md)
    "feature": {"KD_FEATURE": 0.3},
    "cwd": {"KD_CWD": 0.3},
    "affinity": {"KD_AFFINITY": 1.0},
    "all": {"KD_FEATURE": 0.3, "KD_CWD": 0.3, "KD_AFFINITY": 1.0},
    "mimic": {"KD_ALPHA": 1.0, "KD_BETA": 0.0, "KD_TEMPERATURE": 1.0},  # the teacher's predictions only: capacity
}
OUTPUT_DIR = "runs/kd_study"
REAL_DATA = None             # a prepared real dataset: every run leaves one chip out (benchmark_real.py)
TEACHERS = None              # with REAL_DATA: the teacher's benchmark_real OUTPUT_DIR on the same chips
TABLE_ONLY = False           # with REAL_DATA: the table of every run already in OUTPUT_DIR, nothing trained
DRY_RUN = False              # print the commands without running them


def main():
    if any(arg in cli.HELP for arg in sys.argv[1:]):  # help, not a study run with "--help" passed on
        print(__doc__ + "\n" + describe(script_constants(globals())))
        return
    own = [a for a in sys.argv[1:] if split_argument(a)[0] in STUDY_OWN]
    passed = dict(split_argument(a) for a in sys.argv[1:] if a not in own)
    c = apply_overrides(script_constants(globals()), own)
    if c["REAL_DATA"]:
        return real_main(c, passed)
    rows = run_study(c, passed)
    table = aggregate(rows)
    write_results(rows, table, Path(c["OUTPUT_DIR"]))
    kd = kd_constants()  # what a run takes where EPOCHS or DATA_ROOT is not passed
    print("\n" + render(table, f"Distillation study: {passed.get('EPOCHS', kd['EPOCHS'])} epoch(s) on "
                               f"{passed.get('DATA_ROOT', kd['DATA_ROOT'])}, seeds {c['SEEDS']}; best validation IoU"))


def real_main(c: dict, passed: dict) -> None:
    if c["TABLE_ONLY"]:
        rows, teacher = finished_runs(Path(c["OUTPUT_DIR"])), read_result(Path(str(c["TEACHERS"])))
    else:
        rows, teacher = run_real_study(c, passed)
    if c["DRY_RUN"] or not rows:
        return
    table = aggregate_real(rows, teacher)
    write_results(rows, table, Path(c["OUTPUT_DIR"]))
    epochs = passed.get("EPOCHS", kd_constants()["EPOCHS"])
    print("\n" + render_real(table, f"Distillation study, leave one chip out of {c['REAL_DATA']}: {epochs} epoch(s), "
                                     f"seeds {','.join(sorted({str(r['seed']) for r in rows}))}, teachers {c['TEACHERS']}"))


if __name__ == "__main__":
    run(main)
