"""Train one script on every fold of a k-fold dataset, one run after the other, then say how to aggregate.

    python train_folds.py train_unetlight.py
    python train_folds.py train_pspnet.py EPOCHS=2 FOLDS=1,3
    python train_folds.py train_pspmixer.py DATA_ROOT=data/02_kfold OUTPUT_DIR=runs/mixer_cv PATCH=32

Runs `python SCRIPT DATA_ROOT=<root>/fold_k OUTPUT_DIR=<out>/fold_k [NAME=value ...]` for each fold with
the same Python, streaming its output. <root> is the script's DATA_ROOT (or a DATA_ROOT override); <out> is the
script's own OUTPUT_DIR (e.g. runs/unetlight) or an OUTPUT_DIR override. Every other NAME=value goes to
the script unchanged (RESUME=1 continues each fold's run). FOLDS and DRY_RUN belong to this script.
Stops at the first fold that fails. At the end it prints the evaluate.py command that reports each
fold's checkpoint on its own fold and the mean and standard deviation over folds.
"""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lib.cli import run, split_argument
from lib.config import ConfigError, describe, parse_value
from lib.errors import DataError, TrainingError

FOLDS = None                 # None: every fold_* folder under DATA_ROOT; 5: folds 1..5; [1, 3]: those folds
DATA_ROOT = "02_kfold"       # the k-fold root holding fold_1 .. fold_K
DRY_RUN = False              # print the commands without running them

FOLD_PATTERN = re.compile(r"^fold_(\d+)$")
OWN = ("FOLDS", "DRY_RUN")   # constants of this script; every other NAME=value is the training script's


def script_constant(script: Path, name: str):
    """The literal value of a top-level `NAME = value` in `script`, read without running it (None if absent)."""
    tree = ast.parse(script.read_text(), str(script))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def select_folds(root: Path, folds) -> list[int]:
    """Fold numbers to run: all fold_* folders of `root`, the first `folds`, or the listed ones."""
    found = sorted(int(m.group(1)) for child in (root.iterdir() if root.is_dir() else [])
                   if child.is_dir() and (m := FOLD_PATTERN.match(child.name)))
    if folds is None:
        if not found:
            raise DataError(f"no fold_* folders in {str(root)!r}; make k-fold data "
                            f"(lib.synthetic.demo.make_demo_dataset(..., folds=K)) or set DATA_ROOT")
        return found
    wanted = list(range(1, int(folds) + 1)) if isinstance(folds, int) else [int(k) for k in folds]
    missing = [k for k in wanted if k not in found]
    if missing:
        raise ConfigError(f"FOLDS={folds!r} but {root} has no {', '.join(f'fold_{k}' for k in missing)} "
                          f"(found: {', '.join(f'fold_{k}' for k in found) or 'none'})")
    return wanted


def parse_argv(argv: list[str]) -> tuple[Path, dict, list[str]]:
    """(script, this script's constants, the overrides passed on to the script)."""
    if not argv:
        raise ConfigError("give a training script, e.g. python train_folds.py train_unetlight.py (--help explains)")
    if argv[0] in ("-h", "--help"):  # help on stdout, exit status 0
        print(__doc__ + "\n" + describe({"FOLDS": FOLDS, "DATA_ROOT": DATA_ROOT, "DRY_RUN": DRY_RUN}))
        raise SystemExit(0)
    script = Path(argv[0])
    if not script.is_file() or script.suffix != ".py":
        raise ConfigError(f"{argv[0]!r} is not a training script (e.g. train_unetlight.py)")
    own = {"FOLDS": FOLDS, "DATA_ROOT": script_constant(script, "DATA_ROOT") or DATA_ROOT, "DRY_RUN": DRY_RUN,
           "OUTPUT_DIR": script_constant(script, "OUTPUT_DIR") or f"runs/{script.stem.removeprefix('train_')}"}
    passed = []
    for arg in argv[1:]:
        name, text = split_argument(arg)
        if name in ("DATA_ROOT", "OUTPUT_DIR"):
            own[name] = text
        elif name == "FOLDS":
            try:
                value = ast.literal_eval(text) if text.strip().lower() not in ("none", "null") else None
            except (ValueError, SyntaxError):
                value = [item for item in text.split(",") if item.strip()]
            own["FOLDS"] = value
        elif name == "DRY_RUN":
            own["DRY_RUN"] = parse_value(name, text, False)
        else:
            passed.append(f"{name}={text}")
    return script, own, passed


def main(argv=None) -> list[Path]:
    argv = sys.argv[1:] if argv is None else list(argv)
    script, c, passed = parse_argv(argv)
    root, output = Path(c["DATA_ROOT"]), Path(c["OUTPUT_DIR"])
    folds = select_folds(root, c["FOLDS"])
    print(f"{script}: {len(folds)} fold(s) of {root} -> {output}/fold_k", flush=True)
    checkpoints = []
    started = time.time()
    for k in folds:
        command = [sys.executable, str(script), f"DATA_ROOT={root / f'fold_{k}'}",
                   f"OUTPUT_DIR={output / f'fold_{k}'}", *passed]
        print(f"\n=== fold {k} ({folds.index(k) + 1}/{len(folds)}): {shlex.join(command)}", flush=True)
        checkpoints.append(output / f"fold_{k}" / "best.pt")
        if c["DRY_RUN"]:
            continue
        result = subprocess.run(command)  # inherits stdout/stderr: the script's output streams through
        if result.returncode != 0:
            raise TrainingError(f"fold {k} failed (exit status {result.returncode}); folds before it are done. "
                                f"Rerun from it with FOLDS={','.join(map(str, folds[folds.index(k):]))} (add RESUME=1 to "
                                f"continue from its last.pt, if it saved one)")
    print(f"\n{len(folds)} fold(s) {'planned' if c['DRY_RUN'] else 'trained'} in {time.time() - started:.0f} s. "
          f"Aggregate with:\n  {shlex.join(['python', 'evaluate.py', *map(str, checkpoints), '--data-root', str(root)])}")
    return checkpoints


if __name__ == "__main__":
    run(main)  # a ConfigError (an unreadable argument) is one `error:` line
