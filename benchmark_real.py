"""Leave one chip out: train a script once per held-out chip on all the others, score the chip at the last epoch.

    python benchmark_real.py /tmp/real5
    python benchmark_real.py /tmp/real5 SCRIPT=train_pspnet.py EPOCHS=20 OUTPUT_DIR=runs/benchmark_real_pspnet
    python benchmark_real.py data/s1f11 GROUP_BY=region CHIPS=Spain,Bolivia EPOCHS=40 BCE_WEIGHT=0.5
    python benchmark_real.py /tmp/real5 SCRIPT=kd.py TEACHERS=runs/benchmark_real_pspnet STUDENT=UnetLight

DATA_ROOT is a prepared dataset (prepare_data.py) whose patch ids are {chip}_r{i}c{j}; every split folder
below it is read, so a flat train/ layout and a k-fold layout both work. For each chip (or GROUP_BY group)
the fold folder OUTPUT_DIR/<chip>/ gets data/ (train: links to the other chips' patches, val: the held-out
chip's), run/ (the script's OUTPUT_DIR) and score.json. The model is scored from run/last.pt, the last
epoch, never chosen on the held-out chip; and so that the held-out chip steers nothing, every fold runs with
PATIENCE and PLATEAU_PATIENCE out of reach (no early stop, no learning-rate cut on its loss) unless given.
Beside the model: the single threshold per band that the same run fitted on its training chips, and Otsu
per image (lib/train/baseline.py), on the same pixels. A chip without water is scored by its false-positive
share and left out of the IoU means. Writes benchmark_real.csv, .json, .md (the table) and .png.

Every NAME=value that is not one of this script's constants goes to the training script of every fold
(TRAIN_BANDS, EPOCHS, BCE_WEIGHT, ...). A fold whose score.json matches the command is skipped; one with
an unfinished run continues with RESUME=1.

Which method maps each chip best: METHODS=model,threshold,ensemble also maps every held-out chip whole (its
patches put back together) as predict.py maps a scene, with each `--method`, each backscatter band alone
(lib/bench/chip_methods.py), and writes benchmark_real_methods.md and .json (per chip and pooled IoU).
CHECKPOINT=path scores one model trained elsewhere (a demo-trained one, say) on every chip instead of
training folds.

    python benchmark_real.py /tmp/real5 TRAIN_BANDS=VV,VH EPOCHS=40 METHODS=model,threshold,ensemble
    python benchmark_real.py /tmp/real5 CHECKPOINT=runs/pspnet/best.pt METHODS=model,threshold,ensemble OUTPUT_DIR=runs/demo_methods

SCRIPT=kd.py distils on every fold the teacher that never saw its held-out chip: TEACHERS names the
OUTPUT_DIR of a teacher's benchmark_real.py run on the same data and chips, and each fold's kd.py takes
TEACHER_CHECKPOINT=TEACHERS/<chip>/run/last.pt (docs/distillation-methods.md#measured-on-real-chips).
"""
from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

from lib.bench.chip_table import markdown, summarize, write_outputs
from lib.bench.chips import find_groups, link_fold
from lib.cli import split_argument
from lib.config import ConfigError, describe, parse_value, with_defaults
from lib.errors import TrainingError

SCRIPT = "train_unetlight.py"  # the 12K-parameter student: learns from a few chips, minutes on a CPU
OUTPUT_DIR = "runs/benchmark_real"
GROUP_BY = "chip"            # what is held out together: "chip", "region" (name up to the first _) or a regex
CHIPS = None                 # None: hold out every chip in turn; "a,b": only these (the others still train)
RESUME = False               # continue folds whose run stopped before its last epoch
DEVICE = "auto"              # for scoring; the training script has its own DEVICE
BATCH_SIZE = 32              # for scoring; given, also every fold's training BATCH_SIZE
METHODS = None               # "model,threshold,ensemble": also map each chip whole with these predict.py --method values
CHECKPOINT = None            # a model trained elsewhere, scored on every chip (no fold trained)
TEACHERS = None              # SCRIPT=kd.py: a teacher's benchmark_real OUTPUT_DIR (its fold <chip> teaches fold <chip>)
FOLD_DEFAULTS = {"TRAIN_BANDS": "VV,VH",          # the bands every real chip has
                 "PATIENCE": "1000000", "PLATEAU_PATIENCE": "1000000"}  # the held-out chip must not steer training
OWN = {"SCRIPT": SCRIPT, "OUTPUT_DIR": OUTPUT_DIR, "GROUP_BY": GROUP_BY, "CHIPS": CHIPS, "RESUME": RESUME,
       "DEVICE": DEVICE, "BATCH_SIZE": BATCH_SIZE, "METHODS": METHODS, "CHECKPOINT": CHECKPOINT,
       "TEACHERS": TEACHERS}


def script_names(script: Path) -> set[str]:
    """The UPPER_CASE names a training script assigns at top level (the constants it accepts)."""
    tree = ast.parse(script.read_text(), str(script))
    return {target.id for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name) and target.id.isupper()}


def parse_argv(argv: list[str]) -> tuple[Path, dict, dict]:
    """(DATA_ROOT, this script's constants, the constants passed to every fold's script)."""
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__ + "\n" + describe(OWN) + f"\n  passed to every fold unless given: {FOLD_DEFAULTS}")
    if "=" in argv[0]:
        raise ConfigError(f"the first argument is DATA_ROOT (a prepared dataset), got {argv[0]!r}")
    own, passed = dict(OWN), {}
    for arg in argv[1:]:
        name, text = split_argument(arg)
        if name in OWN:
            own[name] = parse_value(name, text, OWN[name])
            if name == "BATCH_SIZE":  # the training scripts' constant too: BATCH_SIZE=4 means 4 patches a step
                passed[name] = text
        elif name == "DATA_ROOT":
            raise ConfigError("DATA_ROOT is the first argument; each fold's DATA_ROOT is made by this script")
        else:
            passed[name] = text
    script = Path(str(own["SCRIPT"]))
    if not script.is_file() and (Path(__file__).parent / script).is_file():  # run from another folder
        script = Path(__file__).parent / script
    if not script.is_file() or not (script.name.startswith("train_") or script.name == "kd.py") or script.suffix != ".py":
        raise ConfigError(f"SCRIPT={own['SCRIPT']!r}: not a training script (e.g. train_unetlight.py, train_pspnet.py, kd.py)")
    check_teachers(script, own, passed)
    unknown = sorted(set(passed) - script_names(script))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not a constant of {script} nor of benchmark_real.py "
                          f"({', '.join(OWN)})")
    if own["CHECKPOINT"] is not None:
        passed.pop("BATCH_SIZE", None)  # scoring's only: no fold is trained
        if passed:
            raise ConfigError(f"{', '.join(passed)}: CHECKPOINT={own['CHECKPOINT']} scores a trained model; "
                              f"no fold is trained, so there is no training script to pass them to")
        if not Path(str(own["CHECKPOINT"])).is_file():
            raise ConfigError(f"CHECKPOINT={own['CHECKPOINT']!r}: no such file")
    return Path(argv[0]), {**own, "SCRIPT": str(script), "METHODS": method_names(own["METHODS"])}, \
        {**FOLD_DEFAULTS, **passed}


def method_names(methods) -> list[str] | None:
    """METHODS as a list of predict.py --method values (None: no method table)."""
    if methods is None:
        return None
    from lib.mapping.methods import METHODS as KNOWN
    names = [m.strip() for m in (methods if isinstance(methods, (list, tuple)) else str(methods).split(",")) if m.strip()]
    unknown = [m for m in names if m not in KNOWN]
    if unknown or not names:
        raise ConfigError(f"METHODS={methods!r}: give predict.py methods separated by commas ({','.join(KNOWN)})")
    return names


def fold_checkpoint(fold: Path, own: dict) -> Path:
    """The model scored on the fold's held-out chip: CHECKPOINT, else the fold's last epoch."""
    return Path(str(own["CHECKPOINT"])) if own["CHECKPOINT"] is not None else fold / "run" / "last.pt"


def check_teachers(script: Path, own: dict, passed: dict) -> None:
    """kd.py takes its teachers from TEACHERS, one per fold; any other script takes none."""
    if script.name != "kd.py":
        if own["TEACHERS"] is not None:
            raise ConfigError(f"TEACHERS={own['TEACHERS']!r}: only SCRIPT=kd.py distils; {script.name} trains alone")
        return
    if own["TEACHERS"] is None:
        raise ConfigError("SCRIPT=kd.py needs TEACHERS=<a teacher's benchmark_real OUTPUT_DIR>: each fold's teacher "
                          "must be one that never saw its held-out chip")
    if "TEACHER_CHECKPOINT" in passed:
        raise ConfigError("TEACHER_CHECKPOINT: each fold takes TEACHERS/<chip>/run/last.pt; pass TEACHERS only")


def fold_teacher(teachers: str, chip: str, train_chips: list[str]) -> dict:
    """{"TEACHER_CHECKPOINT": ...} of the teacher fold that held out `chip`, trained on the same chips."""
    fold = Path(teachers) / chip
    checkpoint, record_path = fold / "run" / "last.pt", fold / "score.json"
    try:
        trained_on = json.loads(record_path.read_text())["settings"]["train_chips"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"TEACHERS={teachers!r}: no finished teacher fold for {chip} ({record_path} missing or "
                          f"unreadable); run benchmark_real.py with the teacher's script there first") from None
    if trained_on != train_chips:
        raise ConfigError(f"TEACHERS={teachers!r}: the teacher of {chip} trained on {', '.join(trained_on)}, this fold "
                          f"on {', '.join(train_chips)}: a teacher benchmark_real run on the same data and GROUP_BY")
    if not checkpoint.is_file():
        raise ConfigError(f"TEACHERS={teachers!r}: {checkpoint} is missing")
    return {"TEACHER_CHECKPOINT": str(checkpoint)}


def selected(groups: dict, chips) -> list[str]:
    if chips is None:
        return list(groups)
    wanted = [str(c).strip() for c in (chips if isinstance(chips, (list, tuple)) else str(chips).split(",")) if str(c).strip()]
    missing = [c for c in wanted if c not in groups]
    if missing:
        raise ConfigError(f"CHIPS: {', '.join(missing)} not in DATA_ROOT (chips: {', '.join(groups)})")
    return wanted


def run_state(run_dir: Path) -> str:
    """"none" (nothing trained), "complete" (its last epoch is in last.pt) or "unfinished"."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "unfinished" if (run_dir / "last.pt").exists() else "none"
    if not (run_dir / "last.pt").exists():
        return "none"
    return "complete" if summary.get("epochs_run") == with_defaults(summary.get("constants") or {})["EPOCHS"] else "unfinished"


def train_fold(script: Path, fold: Path, passed: dict, resume: bool) -> None:
    state = run_state(fold / "run")
    if state == "complete":
        return
    if state == "unfinished" and not resume:
        raise ConfigError(f"{fold / 'run'} holds an unfinished run; add RESUME=1 to continue it (or delete {fold})")
    command = [sys.executable, str(script), f"DATA_ROOT={fold / 'data'}", f"OUTPUT_DIR={fold / 'run'}",
               *(f"{k}={v}" for k, v in passed.items()), *(["RESUME=1"] if state == "unfinished" else [])]
    print(f"  {shlex.join(command)}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise TrainingError(f"fold {fold.name}: {script} failed (its message is above); folds before it are kept, "
                          f"rerun the same command to go on")


def score_fold(fold: Path, own: dict) -> dict:
    """Counts per band of the model (run/last.pt), the threshold its run fitted on the training chips, and
    Otsu per image, on the held-out chip; scored with evaluate.py's code."""
    from lib.bench.scoring import checkpoint_split, evaluate_checkpoint
    from lib.bench.onnx_model import load_model_any
    from lib.runtime import resolve_device
    from lib.train.baseline import fit_thresholds, otsu_counts, recorded_thresholds, threshold_counts
    device, path = resolve_device(str(own["DEVICE"])), fold_checkpoint(fold, own)
    model, checkpoint = load_model_any(path, device)
    dataset, bands = checkpoint_split(checkpoint, fold / "data", "val", None)
    row = evaluate_checkpoint(model, checkpoint, path, dataset, bands, fold / "data", "val", int(own["BATCH_SIZE"]), device)
    thresholds = recorded_thresholds(checkpoint.get("baseline"), bands)
    if thresholds is None:  # a run that recorded none: fit on its training chips here
        thresholds = fit_thresholds(checkpoint_split(checkpoint, fold / "data", "train", bands)[0], bands)
    counts = {"model": row["counts"],
              "threshold": {b: threshold_counts(dataset, b, t).tolist() for b, (t, _) in thresholds.items()},
              "otsu": {b: otsu_counts(dataset, b, t.water_below).tolist() for b, (t, _) in thresholds.items()}}
    return {"bands": bands, "patches": row["patches"], "epoch": checkpoint.get("epoch"),
            "thresholds": {b: t.describe(b) for b, (t, _) in thresholds.items()}, "counts": counts}


def with_methods(record: dict, groups: dict, chip: str, fold: Path, own: dict) -> dict:
    """The fold's record with its chip mapped whole by each of METHODS (added to score.json once)."""
    methods = own["METHODS"]
    if not methods or (record.get("methods") or {}).get("names") == methods:
        return record
    from lib.bench.chip_methods import map_chip, method_bands
    from lib.bench.onnx_model import load_model_any
    path = fold_checkpoint(fold, own)
    model, checkpoint = load_model_any(path, "cpu")
    bands = method_bands(groups, checkpoint["data"])
    how = "stacked as the model's input" if checkpoint["data"].get("input_bands") else "each alone"
    print(f"{chip}: mapping the whole chip with --method {', '.join(methods)} ({', '.join(bands)}, {how})", flush=True)
    record["methods"] = {"names": methods, **map_chip(model, checkpoint, path, groups[chip], bands, methods)}
    (fold / "score.json").write_text(json.dumps(record, indent=2))
    return record


def run_fold(groups: dict, chip: str, script: Path, own: dict, passed: dict) -> dict:
    fold = Path(str(own["OUTPUT_DIR"])) / chip
    record_path = fold / "score.json"
    patches = {g: [p.patch_id for p in patches] for g, patches in groups.items()}
    train_chips = sorted(g for g in groups if g != chip)
    if own["TEACHERS"] is not None:
        passed = {**passed, **fold_teacher(str(own["TEACHERS"]), chip, train_chips)}
    settings = ({"checkpoint": str(own["CHECKPOINT"]), "patches": patches} if own["CHECKPOINT"] is not None else
                {"script": str(script), "passed": passed, "train_chips": train_chips, "patches": patches})
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            print(f"{chip}: complete ({record_path}), skipped", flush=True)
            return with_methods(record, groups, chip, fold, own)
        raise ConfigError(f"{record_path}: this fold was run with other settings (script, constants or data); "
                          f"choose another OUTPUT_DIR, or delete {fold} to run it again")
    sizes = link_fold(groups, chip, fold / "data")
    if own["CHECKPOINT"] is None:
        print(f"{chip}: training on {sizes['train']} patches of {len(groups) - 1} other chips, "
              f"held-out {sizes['val']} patches", flush=True)
        train_fold(script, fold, passed, bool(own["RESUME"]))
    else:
        print(f"{chip}: scoring {own['CHECKPOINT']} on its {sizes['val']} patches (no fold trained)", flush=True)
    record = {"chip": chip, "settings": settings, **score_fold(fold, own)}
    record_path.write_text(json.dumps(record, indent=2))
    return with_methods(record, groups, chip, fold, own)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    root, own, passed = parse_argv(argv)
    groups = find_groups(root, str(own["GROUP_BY"]))
    chips = selected(groups, own["CHIPS"])
    out = Path(str(own["OUTPUT_DIR"]))
    if own["CHECKPOINT"] is None:
        print(f"{own['SCRIPT']}: {len(chips)} held-out chip(s) of {len(groups)} in {root} -> {out}/<chip>; "
              f"passed to every fold: {' '.join(f'{k}={v}' for k, v in passed.items())}", flush=True)
    else:
        print(f"{own['CHECKPOINT']}: scored on {len(chips)} chip(s) of {len(groups)} in {root} -> {out}/<chip>",
              flush=True)
    folds = {chip: run_fold(groups, chip, Path(str(own["SCRIPT"])), own, passed) for chip in chips}
    summary = summarize(folds)
    print("\n" + markdown(summary))
    settings = {"data_root": str(root), **own, "passed": passed,
                "command": shlex.join(["python", "benchmark_real.py", *argv])}
    paths = write_outputs(summary, out, settings)
    if own["METHODS"]:
        paths += write_methods(folds, own["METHODS"], out, settings)
    print(f"wrote {', '.join(map(str, paths))}")
    return summary


def write_methods(folds: dict, methods: list[str], out: Path, settings: dict) -> list[Path]:
    """benchmark_real_methods.md and .json: each chip mapped whole by each method."""
    from lib.bench.chip_methods import methods_markdown, summarize_methods
    from lib.bench.chip_table import finite
    summary = summarize_methods({chip: fold["methods"] for chip, fold in folds.items()}, methods)
    text = methods_markdown(summary)
    print("\n" + text)
    paths = [out / "benchmark_real_methods.md", out / "benchmark_real_methods.json"]
    paths[0].write_text(text + "\n")
    paths[1].write_text(json.dumps(finite({"settings": settings, **summary}), indent=2, allow_nan=False))
    return paths


if __name__ == "__main__":
    from lib.cli import run
    run(main)
