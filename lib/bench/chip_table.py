"""The table of benchmark_real.py: per held-out chip and band, the model's IoU, precision and recall against
the threshold fitted on the other chips and Otsu per image; then the mean over chips, the IoU pooled over
chips (confusion counts summed) and the chips the model wins.

Every number comes from a fold's confusion counts (tp, fp, fn, tn), so the pooled IoU is exact. A chip
without water has no IoU (0/0): it is scored by its false-positive share fp / (fp + tn), left out of the IoU
means, kept in the pooled counts, and won by whichever calls less of it water.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from lib.checkpoint import atomic_write
from lib.train.metrics import metrics_from_counts

METHODS = ("model", "threshold", "otsu")
LABELS = {"model": "model", "threshold": "threshold (fit on the other chips)", "otsu": "Otsu per image"}
SCORES = ("iou", "precision", "recall", "fp_share")


def scores(counts) -> dict[str, float | None]:
    """IoU, precision, recall and false-positive share of (tp, fp, fn, tn); IoU None without water."""
    tp, fp, fn, tn = (int(v) for v in counts)
    found = metrics_from_counts(torch.tensor([tp, fp, fn, tn]))
    return {"iou": found["iou"] if tp + fn else None, "precision": found["precision"], "recall": found["recall"],
            "fp_share": fp / (fp + tn) if fp + tn else 0.0}


def constant_answer(counts) -> str:
    """"all water" / "all land" where the model gave one answer for every pixel of the chip."""
    tp, fp, fn, tn = (int(v) for v in counts)
    return "all water" if fn + tn == 0 else "all land" if tp + fp == 0 else ""


def model_wins(model: dict, threshold: dict) -> bool:
    """Higher IoU than the threshold; on a chip without water, a smaller false-positive share."""
    if model["iou"] is None:
        return model["fp_share"] < threshold["fp_share"]
    return model["iou"] > threshold["iou"]


def chip_row(chip: str, fold: dict, band: str) -> dict:
    counts = {method: fold["counts"][method][band] for method in METHODS}
    tp, fp, fn, tn = counts["threshold"]
    row = {"chip": chip, "band": band, "patches": fold["patches"], "epoch": fold["epoch"],
           "water_share": (tp + fn) / max(tp + fp + fn + tn, 1), "threshold": fold["thresholds"][band],
           "constant": constant_answer(counts["model"])}
    for method in METHODS:
        row.update({f"{method}_{name}": value for name, value in scores(counts[method]).items()})
    row["model_wins"] = model_wins(scores(counts["model"]), scores(counts["threshold"]))
    return row


def summarize(folds: dict[str, dict]) -> dict:
    """{"bands": ..., "rows": per chip and band, "mean": ..., "pooled": ..., "wins": ...} of the folds'
    score records ({chip: {"bands", "patches", "epoch", "thresholds", "counts": {method: {band: counts}}}})."""
    bands = list(next(iter(folds.values()))["bands"])
    rows = [chip_row(chip, fold, band) for band in bands for chip, fold in folds.items()]
    mean, pooled, wins = {}, {}, {}
    for band in bands:
        wet = [row for row in rows if row["band"] == band and row["model_iou"] is not None]
        mean[band] = {"chips": len(wet), **{f"{method}_{name}": float(np.mean([row[f"{method}_{name}"] for row in wet]))
                                            if wet else None for method in METHODS for name in SCORES}}
        pooled[band] = {"chips": len(folds)}
        for method in METHODS:
            total = np.sum([fold["counts"][method][band] for fold in folds.values()], axis=0)
            pooled[band].update({f"{method}_{name}": value for name, value in scores(total).items()})
        wins[band] = {"model": sum(row["model_wins"] for row in rows if row["band"] == band), "chips": len(folds)}
    return {"bands": bands, "rows": rows, "mean": mean, "pooled": pooled, "wins": wins}


def cell(value, share=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if share else f"{value:.3f}"


def iou_cell(row: dict, method: str) -> str:
    """The IoU, or for a chip without water its false-positive share."""
    if row[f"{method}_iou"] is None:
        return f"FP {cell(row[f'{method}_fp_share'], True)}"
    return cell(row[f"{method}_iou"])


def markdown(summary: dict) -> str:
    """One markdown table per band."""
    blocks = []
    for band in summary["bands"]:
        lines = [f"| {band} | water | model IoU | P | R | threshold IoU | threshold | Otsu IoU | model wins |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for row in (r for r in summary["rows"] if r["band"] == band):
            name = row["chip"] + (" (no water: FP share)" if row["model_iou"] is None else "")
            name += f" **{row['constant']}**" if row["constant"] else ""
            lines.append(f"| {name} | {cell(row['water_share'], True)} | {iou_cell(row, 'model')} | "
                         f"{cell(row['model_precision'])} | {cell(row['model_recall'])} | {iou_cell(row, 'threshold')} | "
                         f"{row['threshold']} | {iou_cell(row, 'otsu')} | {'yes' if row['model_wins'] else 'no'} |")
        mean, pooled, wins = summary["mean"][band], summary["pooled"][band], summary["wins"][band]
        for label, entry in ((f"mean over {mean['chips']} chips with water", mean),
                             (f"pooled over {pooled['chips']} chips", pooled)):
            lines.append(f"| {label} | | {cell(entry['model_iou'])} | {cell(entry['model_precision'])} | "
                         f"{cell(entry['model_recall'])} | {cell(entry['threshold_iou'])} | | "
                         f"{cell(entry['otsu_iou'])} | |")
        lines.append(f"| model wins | | | | | | | | {wins['model']} of {wins['chips']} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_csv(summary: dict, path: Path) -> None:
    """One row per chip and band, then per band its mean and pooled rows."""
    names = [f"{method}_{name}" for method in METHODS for name in SCORES]
    columns = ["kind", "chip", "band", "patches", "epoch", "water_share", "threshold", "constant", *names,
               "model_wins", "chips"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in summary["rows"]:
            writer.writerow({"kind": "chip", **row})
        for band in summary["bands"]:
            writer.writerow({"kind": "mean (chips with water)", "band": band, **summary["mean"][band]})
            writer.writerow({"kind": "pooled", "band": band, **summary["pooled"][band]})
            writer.writerow({"kind": "wins", "band": band, "model_wins": summary["wins"][band]["model"],
                             "chips": summary["wins"][band]["chips"]})


def plot(summary: dict, path: Path) -> None:
    """Bars per band: IoU of each method per chip, the mean and the pooled IoU; a chip without water shows
    its false-positive share, hatched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bands = summary["bands"]
    figure, axes = plt.subplots(1, len(bands), figsize=(6 * len(bands), 4), squeeze=False)
    for axis, band in zip(axes[0], bands):
        rows = [row for row in summary["rows"] if row["band"] == band]
        names = [row["chip"] for row in rows] + ["mean", "pooled"]
        for k, method in enumerate(METHODS):
            values = [row[f"{method}_iou"] if row[f"{method}_iou"] is not None else row[f"{method}_fp_share"]
                      for row in rows] + [summary["mean"][band][f"{method}_iou"] or 0.0,
                                          summary["pooled"][band][f"{method}_iou"] or 0.0]
            bars = axis.bar(np.arange(len(names)) + (k - 1) * 0.27, values, 0.27, label=LABELS[method])
            for bar, row in zip(bars, rows):
                if row[f"{method}_iou"] is None:
                    bar.set_hatch("//")
        axis.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
        axis.set(ylim=(0, 1), ylabel="water IoU (hatched: false-positive share)", title=f"{band}, held-out chips")
        axis.legend(fontsize=8)
    figure.tight_layout()
    try:
        atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    finally:
        plt.close(figure)


def write_outputs(summary: dict, folder: Path, settings: dict) -> list[Path]:
    """benchmark_real.csv, .json, .md and .png in `folder`."""
    paths = [folder / f"benchmark_real.{suffix}" for suffix in ("csv", "json", "md", "png")]
    write_csv(summary, paths[0])
    paths[1].write_text(json.dumps({"settings": settings, **summary}, indent=2, allow_nan=False))
    paths[2].write_text(markdown(summary) + "\n")
    plot(summary, paths[3])
    return paths
