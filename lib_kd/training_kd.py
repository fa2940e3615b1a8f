"""Knowledge distillation on top of the one training engine (lib/train/engine.py): kd.py's run.

    L = KD_ALPHA * L_KD + KD_BETA * L_supervised    (+ the added methods; lib_kd/objective.py)

`distill` resolves kd.py's constants once more with what the teacher checkpoint gives (its bands, image size
and normalization where kd.py says None), builds the student, the teacher and the distillation objective, and
trains with the engine; `distill_sweep` does so for each value of KD_TEMPERATURE=1,2,4,8. The teacher
checkpoint is read once per kd.py run (lib_kd/model_kd.py TeacherFile) and passed on; the final table is
lib_kd/comparison.py's.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from lib.checkpoint import CheckpointError
from lib.cli import HELP, split_argument
from lib.config import Constants, as_constants
from lib.errors import ConfigError
from lib.models.factory import build_model
from lib.train.engine import train
from lib.train.loss import supervised_loss
from lib.train.run_lock import is_main_process
from lib_kd.comparison import comparison_table
from lib_kd.model_kd import Teacher, TeacherFile, inherited_values, load_teacher, student_args
from lib_kd.objective import METHOD_CONSTANTS, DistillationLoss, FeaturePair, KDMethods, KDObjective


def added_methods(c: Constants | dict, teacher: Teacher, name: str, args: dict) -> tuple[KDMethods, FeaturePair | None]:
    """The methods of kd.py's KD_* constants, and the feature maps they pair (None when no term needs them)."""
    methods = KDMethods.from_constants(c)
    features = None
    if methods.needs_features:
        features = FeaturePair(name, args, teacher.model, teacher.name, methods, int(c["IMAGE_SIZE"]), int(c["SEED"]))
    return methods, features


def resolve_output_dir(c) -> str:
    return str(c.get("OUTPUT_DIR") or f"runs/kd_{c['STUDENT'].lower()}")


def distill(constants: Constants | dict, table: bool = True, teacher_file: TeacherFile | None = None) -> dict:
    """Train c["STUDENT"] against the teacher of c["TEACHER_CHECKPOINT"]; returns the engine's summary.
    With `table`, prints the comparison table at the end (COST_TABLE: with GFLOPs and CPU latency).
    `teacher_file`: TEACHER_CHECKPOINT already read (a sweep reads it once for all its runs)."""
    constants = as_constants(constants)
    teacher_file = teacher_file or TeacherFile.read(constants["TEACHER_CHECKPOINT"])
    summary, c, teacher, objective = distill_run(constants, teacher_file)
    if is_main_process() and table:
        print(comparison_table(c, summary, teacher, objective.teacher_val or {}, cost=bool(c.get("COST_TABLE", True))))
    return summary


def distill_run(constants: Constants, teacher_file: TeacherFile) -> tuple[dict, Constants, Teacher, KDObjective]:
    """One distillation: (summary, the constants it ran with, its teacher, its objective)."""
    # checked again with what the teacher gives: PATCH must divide the teacher's IMAGE_SIZE
    c = constants.replace(OUTPUT_DIR=resolve_output_dir(constants), **inherited_values(constants, teacher_file))
    name, args = c["STUDENT"], student_args(c)
    try:
        build_model(name, args)  # fail before the teacher and the data are loaded
    except (TypeError, ValueError) as error:
        raise ConfigError(f"STUDENT={name!r} cannot be built with {args} (from STUDENT_ARGS and the student "
                          f"constants): {error}") from None
    try:
        loss = DistillationLoss(supervised_loss(c), c["KD_TEMPERATURE"], c["KD_ALPHA"], c["KD_BETA"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    teacher = load_teacher(teacher_file.path, c, teacher_file)  # TeacherError / CheckpointError name the file
    check_resumed_teacher(c, teacher)
    methods, features = added_methods(c, teacher, name, args)
    check_resumed_methods(c, methods)
    is_main = is_main_process()
    if is_main:
        print(f"teacher {teacher.name} from {teacher.path}: {teacher.parameters['held']:,} parameters held, "
              f"{teacher.parameters['used']:,} used; T={loss.temperature:g} alpha={loss.alpha:g} beta={loss.beta:g}; "
              f"{methods.label()}")
        if features:
            print(features.describe())
    objective = KDObjective(teacher, loss, bands=c["VAL_BANDS"], progress=bool(c["PROGRESS"]) and is_main,
                            methods=methods, features=features)
    summary = train(c, name, args, objective=objective, extra_summary=objective.summary)
    return summary, c, teacher, objective


def sweep_values(argv: list[str], name: str) -> tuple[list[str], list[float] | None]:
    """(argv without it, the values) of a comma-separated `NAME=v1,v2,...` argument; (argv, None) when
    `name` is absent or has a single value."""
    rest, values = [], None
    for arg in argv:
        key, text = split_argument(arg) if arg not in HELP else (arg, "")
        if key == name and "," in text:
            try:
                values = [float(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{name}={text!r}: expected numbers separated by commas, e.g. {name}=1,2,4,8") from None
        else:
            rest.append(arg)
    return rest, values


def distill_sweep(constants: Constants | dict, name: str, values: list) -> list[dict]:
    """One distillation per value of constant `name` (kd.py KD_TEMPERATURE=1,2,4,8), each in
    <OUTPUT_DIR>_<short name><value>, then one table of all of them. The teacher file is read once."""
    constants = as_constants(constants)
    teacher_file = TeacherFile.read(constants["TEACHER_CHECKPOINT"])
    short = {"KD_TEMPERATURE": "T"}.get(name, name.lower())
    base = resolve_output_dir(constants)
    runs = []
    for value in values:
        c_run = constants.replace(**{name: value, "OUTPUT_DIR": f"{base}_{short}{value:g}"})
        runs.append(distill_run(c_run, teacher_file))
    c = runs[0][1]
    teacher = load_teacher(teacher_file.path, c, teacher_file)  # a fresh CPU copy for the table's cost columns
    rows = [(f"student {s['model']} {short}={c_run[name]:g}", s, Path(c_run["OUTPUT_DIR"])) for s, c_run, _, _ in runs]
    if is_main_process():
        print(comparison_table(c, rows, teacher, runs[0][0].get("teacher_val") or {},
                               cost=bool(c.get("COST_TABLE", True))))
    return [s for s, _, _, _ in runs]


def check_resumed_teacher(c, teacher: Teacher) -> None:
    """RESUME=1 with another teacher file than the run started with would mix two distillations."""
    previous = Path(c["OUTPUT_DIR"]) / "summary.json"
    if not c.get("RESUME") or not previous.is_file():
        return
    recorded = json.loads(previous.read_text()).get("teacher_sha256")
    if recorded and recorded != teacher.sha256:
        raise CheckpointError(f"RESUME=1 but {teacher.path} is not the teacher this run started with "
                         f"(sha256 {teacher.sha256[:12]}... vs {recorded[:12]}... in {previous})")


def check_resumed_methods(c, methods: KDMethods) -> None:
    """RESUME=1 with other distillation methods than the run started with would mix two objectives (and an
    adapter that last.pt does not hold)."""
    previous = Path(c["OUTPUT_DIR"]) / "summary.json"
    if not c.get("RESUME") or not previous.is_file():
        return
    recorded = json.loads(previous.read_text()).get("kd_methods") or asdict(KDMethods())
    changed = [f"{METHOD_CONSTANTS[f]}: {recorded.get(f)!r} -> {value!r}" for f, value in asdict(methods).items()
               if f in recorded and recorded[f] != value]
    if changed:
        raise ConfigError(f"RESUME=1 with other distillation methods than {previous} records: {'; '.join(changed)}; "
                          f"resume with the run's own KD_* constants or start a new OUTPUT_DIR")
