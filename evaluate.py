"""Evaluate checkpoints on a split, per band, dataset-wide; over k folds with mean and standard deviation.

    python evaluate.py runs/pspnet/best.pt runs/unetlight/best.pt
    python evaluate.py runs/unetlight/fold_*/best.pt --data-root 02_kfold      # k-fold: each on its own fold
    python evaluate.py runs/pspmixer/best.pt --data-root 02_kfold/fold_1 --bands VV --out runs/eval_fold1

Each checkpoint is evaluated with the normalization, bands and image size recorded in it (checkpoint
["data"]) and with lib.train.engine.evaluate, the function training validates with, so the numbers match the
training log. Metrics: IoU, F1, precision, recall and accuracy of the water class per band, from
confusion counts summed over the whole split (no-data pixels left out), and their mean over bands.

Baselines (--baselines, on by default; --no-baselines off): after each checkpoint, a row for the single
threshold per band that its training run fitted on its training split (lib/train/baseline.py; a checkpoint
without one gets thresholds fitted on the evaluated split, marked so) and a row for Otsu's threshold per
image, scored on the same data with the same metrics (kind "baseline" in evaluation.csv; "baselines" in
evaluation.json, beside "results").

Recall by backscatter bin (--recall-bins, on by default): per dB band (VV, VH, HH), the recall of water in
each 2 dB bin of the pixels' own backscatter, the model's beside the threshold's, so a model that calls
brighter water (wind, shallow water, flooded vegetation) land shows where (lib/train/recall_bins.py;
"recall_by_bin" in evaluation.json).

k-fold: when --data-root holds fold_1 .. fold_K folders, every checkpoint is evaluated on its own fold,
found from the checkpoint's recorded DATA_ROOT (".../fold_k") or else from its path (".../fold_k/...").
Checkpoints that differ only in the fold part of their path form one group (for example
runs/unetlight/fold_*/best.pt); each group with two or more folds gets a mean row and a sample standard
deviation row (ddof=1). Writes evaluation.csv and evaluation.json to --out.

KOMPSAT-5 checkpoints (DATA_FORMAT=kompsat5) are scored on whole validation scenes of their recorded
DATA_ROOT and VAL_LIST (or --data-root / --split LIST_FILE), band HH, as in training.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from lib.train.baseline import baseline_record
from lib.data.dataset import DataError
from lib.train.metrics import METRICS
from lib.train.recall_bins import RecallTally, format_bins
from lib.bench.onnx_model import load_model_any
from lib.bench.scoring import checkpoint_split, checkpoint_thresholds, evaluate_checkpoint
from lib.runtime import resolve_device

DATA_ROOT = "02_kfold"
SPLIT = "val"
OUTPUT_DIR = "runs/evaluation"
BATCH_SIZE = 32
FOLD_PATTERN = re.compile(r"^fold_(\d+)$")
NAMES = {"iou": "IoU", "f1": "F1", "precision": "P", "recall": "R", "accuracy": "Acc"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoints", nargs="+", type=Path, help="best.pt / last.pt files, or .onnx files of export_onnx.py")
    parser.add_argument("--data-root", type=Path,
                        help=f"dataset root, or a k-fold root with fold_1..fold_K (default {DATA_ROOT}; for "
                             f"KOMPSAT-5 checkpoints the recorded DATA_ROOT)")
    parser.add_argument("--split", default=SPLIT, help=f"split folder to evaluate on (default {SPLIT}); KOMPSAT-5: "
                                                       f"val/train (the recorded list files) or a list file")
    parser.add_argument("--bands", nargs="+", help="bands to score (default: each checkpoint's val_bands)")
    parser.add_argument("--out", type=Path, default=Path(OUTPUT_DIR), help=f"output folder (default {OUTPUT_DIR})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"batch size (default {BATCH_SIZE})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--precision", default="auto",
                        help="auto (as training: mixed on CUDA, bf16 on a CPU with native bf16, else fp32), fp32, bf16, fp16")
    parser.add_argument("--workers", default="auto", help="DataLoader workers (default auto)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar per checkpoint")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="add rows for the checkpoint's threshold baseline (fitted on its training split when "
                             "recorded, else on the evaluated split) and for Otsu per image (default on)")
    parser.add_argument("--recall-bins", action=argparse.BooleanOptionalAction, default=True,
                        help="print per dB band the recall of water by 2 dB bin of backscatter, beside the threshold's "
                             "(stored as recall_by_bin in evaluation.json; default on)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------- folds

def fold_folders(root: Path) -> dict[int, Path]:
    """{k: root/fold_k} for the fold folders directly under `root` (empty if it is not a k-fold root)."""
    if not root.is_dir():
        return {}
    folds = {}
    for child in root.iterdir():
        match = FOLD_PATTERN.match(child.name)
        if match and child.is_dir():
            folds[int(match.group(1))] = child
    return dict(sorted(folds.items()))


def fold_of(checkpoint_path: Path, constants: dict) -> int | None:
    """The fold a checkpoint was trained on: its recorded DATA_ROOT ends in fold_k, or its path holds fold_k."""
    recorded = constants.get("DATA_ROOT")
    if recorded:
        match = FOLD_PATTERN.match(Path(str(recorded)).name)
        if match:
            return int(match.group(1))
    for part in reversed(checkpoint_path.resolve().parent.parts):
        match = FOLD_PATTERN.match(part)
        if match:
            return int(match.group(1))
    return None


def group_of(checkpoint_path: Path, model_name: str) -> str:
    """Checkpoints whose paths differ only in their fold_k part share a group (runs/unetlight/fold_*/best.pt)."""
    parts = [("fold_*" if FOLD_PATTERN.match(part) else part) for part in checkpoint_path.parts]
    if parts == list(checkpoint_path.parts):
        return model_name
    return str(Path(*parts))


# ---------------------------------------------------------------------------------------- evaluation

def recall_tally(checkpoint: dict, dataset, bands, split: str, args) -> RecallTally | None:
    """With --recall-bins, the tally of the recall of water per 2 dB bin of each dB band, beside the threshold's
    (with --baselines), fed by the scoring pass."""
    if not args.recall_bins:
        return None
    thresholds = checkpoint_thresholds(checkpoint, dataset, bands, split)[0] if args.baselines else None
    return RecallTally(dataset, bands, thresholds)


def recall_rows(recall: RecallTally, row: dict) -> str:
    """Stores the recall by bin in `row["recall_by_bin"]` (evaluation.json); returns the printed block."""
    row["recall_by_bin"] = recall.result() if recall.tallies else {}
    thresholds = recall.thresholds
    names = {band: t.describe(band) for band, (t, _) in thresholds.items()} if thresholds else None
    return format_bins(str(row["checkpoint"]), row["recall_by_bin"], names)


def baseline_rows(checkpoint: dict, row: dict, dataset, bands, split: str) -> list[dict]:
    """Rows for the threshold baseline and Otsu per image on the data `row` was scored on (`dataset`, whose
    raw band files they read): the thresholds the checkpoint recorded (fitted on its training split), else
    thresholds fitted on this split (marked so)."""
    thresholds, fitted_on = checkpoint_thresholds(checkpoint, dataset, bands, split)
    record = baseline_record(thresholds, dataset, fitted_on)
    described = " ".join(t.describe(band).replace(" ", "") for band, (t, _) in thresholds.items())
    common = {k: row[k] for k in ("checkpoint", "epoch", "data_root", "split", "bands", "patches", "items", "fold")}
    rows = []
    for name, entry in ((f"threshold {described} (fit on {fitted_on})", record), ("Otsu per image", record["otsu_per_image"])):
        metrics = {f"{metric}_{band}": value for band, values in entry["bands"].items()
                   for metric, value in values.items() if metric in METRICS}
        means = {metric: float(np.mean([entry["bands"][band][metric] for band in bands])) for metric in METRICS}
        rows.append({**common, "kind": "baseline", "model": name, "group": f"{row['group']} [{name.split()[0]}]",
                     **metrics, **means})
    return rows


def metric_columns(rows: list[dict]) -> list[str]:
    """Per-band columns (iou_VV, f1_VV, ...) in band order, then the band means (iou, f1, ...)."""
    bands = list(dict.fromkeys(band for row in rows for band in row["bands"].split()))
    per_band = [f"{name}_{band}" for band in bands for name in METRICS]
    return per_band + list(METRICS)


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof=1) over the folds of each group with >= 2 folds."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("fold") is not None:
            groups.setdefault(row["group"], []).append(row)
    summary = []
    columns = ["loss", *metric_columns(rows)]
    for group, members in groups.items():
        if len(members) < 2:
            continue
        folds = sorted(row["fold"] for row in members)
        base = {"group": group, "model": members[0]["model"], "folds": len(members),
                "fold": ",".join(str(k) for k in folds)}
        mean = {**base, "kind": "mean"}
        std = {**base, "kind": "std"}
        for column in columns:
            values = np.array([row[column] for row in members if column in row], dtype=np.float64)
            if len(values) == len(members):
                mean[column] = float(values.mean())
                std[column] = float(values.std(ddof=1))
        summary += [mean, std]
    return summary


def format_table(rows: list[dict], summary: list[dict]) -> str:
    columns = metric_columns(rows)
    header = ["checkpoint", "fold", "model", *(label(c) for c in columns)]
    lines = []
    for row in rows:
        lines.append([row["checkpoint"], "" if row.get("fold") is None else str(row["fold"]), row["model"],
                      *(f"{row[c]:.4f}" if c in row else "" for c in columns)])
    for row in summary:
        lines.append([f"{row['group']} ({row['kind']} over {row['folds']} folds)", row["fold"], row["model"],
                      *(f"{row[c]:.4f}" if c in row else "" for c in columns)])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([render(header), render(["-" * w for w in widths]), *(render(line) for line in lines)])


def label(column: str) -> str:
    name, _, band = column.partition("_")
    return f"{NAMES.get(name, name)} {band}" if band else f"{NAMES.get(name, name)} mean"


def finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_outputs(rows: list[dict], summary: list[dict], out: Path, settings: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["kind", "checkpoint", "group", "model", "fold", "folds", "epoch", "data_root", "split", "bands",
               "patches", "items", "loss", *metric_columns(rows)]
    csv_path, json_path = out / "evaluation.csv", out / "evaluation.json"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({"kind": "checkpoint", **row})
        writer.writerows(summary)
    folds = {}
    for row in summary:
        entry = folds.setdefault(row["group"], {"model": row["model"], "folds": row["folds"], "fold": row["fold"]})
        entry[row["kind"]] = {k: finite(v) for k, v in row.items()
                              if k not in ("group", "model", "folds", "fold", "kind")}
    document = {"settings": settings,
                "results": [{k: finite(v) for k, v in row.items()} for row in rows if row.get("kind") != "baseline"],
                "baselines": [{k: finite(v) for k, v in row.items()} for row in rows if row.get("kind") == "baseline"],
                "folds": folds, "std": "sample standard deviation over folds (ddof=1)"}
    json_path.write_text(json.dumps(document, indent=2, allow_nan=False))
    return csv_path, json_path


def data_root_for(path: Path, checkpoint: dict, given: Path | None) -> tuple[Path, int | None]:
    """(root to evaluate on, fold or None). A k-fold root sends the checkpoint to its own fold; a
    KOMPSAT-5 checkpoint without --data-root uses its recorded DATA_ROOT."""
    constants = checkpoint.get("constants") or {}
    if given is None and (checkpoint.get("data") or {}).get("format") == "kompsat5":
        given = Path(str(constants.get("DATA_ROOT", DATA_ROOT)))
    root = given or Path(DATA_ROOT)
    folds = fold_folders(root)
    if not folds:
        if not root.is_dir():
            raise DataError(f"data root {str(root)!r} does not exist (pass --data-root)")
        return root, None
    fold = fold_of(path, constants)
    if fold is None:
        raise DataError(f"{path}: data root {root} holds folds ({', '.join(f'fold_{k}' for k in folds)}) "
                        f"but the checkpoint names no fold (neither its DATA_ROOT {constants.get('DATA_ROOT')!r} "
                        f"nor its path ends in fold_k); pass --data-root {root}/fold_k")
    if fold not in folds:
        raise DataError(f"{path} was trained on fold {fold}, but {root} has no fold_{fold}")
    return folds[fold], fold


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for path in args.checkpoints:
        model, checkpoint = load_model_any(path, device)  # a .pt checkpoint or an exported .onnx
        root, fold = data_root_for(path, checkpoint, args.data_root)
        dataset, bands = checkpoint_split(checkpoint, root, args.split, args.bands)
        recall = recall_tally(checkpoint, dataset, bands, args.split, args)
        row = evaluate_checkpoint(model, checkpoint, path, dataset, bands, root, args.split, args.batch_size, device,
                                  args.precision, args.workers, args.progress, recall and recall.add)
        row["fold"] = fold
        row["group"] = group_of(path, row["model"])
        rows.append(row)
        print(f"{path}: {row['model']} on {root} ({args.split}, {row['items']} items): "
              f"IoU {row['iou']:.4f}, F1 {row['f1']:.4f}", file=sys.stderr)
        if args.recall_bins:
            print(recall_rows(recall, row), file=sys.stderr)
        if args.baselines:
            rows += baseline_rows(checkpoint, row, dataset, bands, args.split)
        del model
    summary = aggregate([row for row in rows if row.get("kind") != "baseline"])
    print(format_table(rows, summary))
    settings = {"data_root": str(args.data_root or DATA_ROOT), "split": args.split,
                "k_fold": any(row["fold"] is not None for row in rows), "bands": args.bands, "device": str(device),
                "batch_size": args.batch_size}
    csv_path, json_path = write_outputs(rows, summary, args.out, settings)
    print(f"wrote {csv_path} and {json_path}")
    return {"results": [row for row in rows if row.get("kind") != "baseline"], "summary": summary,
            "baselines": [row for row in rows if row.get("kind") == "baseline"], "csv": str(csv_path), "json": str(json_path)}


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
