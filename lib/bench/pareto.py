"""Accuracy against cost for every trained model (pareto.py): points, the Pareto front, a CSV and a figure.

A point is one model: its IoU (a run's best validation IoU from summary.json, or a row of an
evaluate.py evaluation.json, which also scores .onnx files such as int8 students), and its cost: GFLOPs
per patch, parameters used, and CPU latency at batch 1 and 32 (lib/bench/cost.py for PyTorch models;
onnxruntime for .onnx files, whose GFLOPs are those of the architecture they were exported from).
A point is on the front when no other point is at least as accurate and at most as costly, and better
in one of the two.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from lib.checkpoint import load_model
from lib.bench.cost import count_flops, model_cost
from lib.errors import CheckpointError, DataError
from lib.models.factory import build_model, parameter_counts
from lib.bench.onnx_model import OnnxModel, load_onnx
from lib.bench.quantize import onnx_seconds

COSTS = {"latency_ms_b1": "CPU latency, batch 1 (ms)", "gflops": "GFLOPs per patch"}


def find_sources(paths: list[Path]) -> tuple[dict[Path, str], list[str]]:
    """{summary.json or evaluation.json file: label} for `paths` (files, or folders searched recursively;
    a run's label is its folder relative to the folder given, e.g. "pspmixer/feature/seed1"), and one line
    per path that holds neither."""
    found, skipped = {}, []
    for path in paths:
        if path.is_file() and path.name in ("summary.json", "evaluation.json"):
            found.setdefault(path, path.parent.name or str(path))
        elif path.is_dir():
            inside = sorted([*path.rglob("summary.json"), *path.rglob("evaluation.json")])
            for source in inside:
                relative = source.parent.relative_to(path).as_posix()
                found.setdefault(source, path.name if relative == "." else relative)
            if not inside:
                skipped.append(f"{path}: no summary.json or evaluation.json inside")
        else:
            skipped.append(f"{path}: not a run folder, summary.json or evaluation.json")
    return found, skipped


def point_of_model(label: str, kind: str, iou: float, path: Path | None, name: str, args: dict, image_size: int,
                   onnx: OnnxModel | None = None) -> dict:
    """One point: the IoU given, the cost measured (the ONNX model `onnx`, loaded from `path`, is timed
    through onnxruntime)."""
    model = build_model(name, args)
    used = parameter_counts(model, image_size)["used"]
    if onnx is not None:
        cost = {"gflops": count_flops(model, image_size) / 1e9,
                **{f"latency_ms_b{b}": 1000 * onnx_seconds(onnx, image_size, b) for b in (1, 32)}}
    else:
        cost = model_cost(model, image_size)  # the cost does not depend on the trained weights
    return {"label": label, "kind": kind, "model": name, "iou": iou, "params_used": used, **cost,
            "source": str(path) if path else ""}


def points_from(source: Path, label: str) -> list[dict]:
    """The points of one summary.json (one run) or evaluation.json (one per scored checkpoint/ONNX file)."""
    document = json.loads(source.read_text())
    if source.name == "summary.json":
        if document.get("val_iou") is None:
            return []
        size = int(document["data"]["image_size"])
        kind = "distilled" if document.get("teacher_checkpoint") else "trained"
        return [point_of_model(label, kind, float(document["val_iou"]), source.parent / "best.pt", document["model"],
                               document.get("model_args") or {}, size)]
    points = []
    for row in document.get("results", []):
        path = Path(row["checkpoint"])
        onnx = None
        if path.suffix == ".onnx":
            onnx, spec = load_onnx(path)  # the session the latency is timed through
            kind = "int8" if spec.get("quantization") else "onnx"
        else:
            _, spec = load_model(path)  # the weights are not used, but a checkpoint they do not fit is refused
            kind = "evaluated"
        points.append(point_of_model(f"{path.parent.name}/{path.name}", kind, float(row["iou"]), path,
                                     spec["model"]["name"], spec["model"].get("args") or {},
                                     int(spec["data"]["image_size"]), onnx))
    return points


def pareto_front(points: list[dict], cost: str) -> list[bool]:
    """Whether each point is on the front of (higher IoU, lower `cost`)."""
    on = []
    for p in points:
        dominated = any(q is not p and q["iou"] >= p["iou"] and q[cost] <= p[cost]
                        and (q["iou"] > p["iou"] or q[cost] < p[cost]) for q in points)
        on.append(not dominated)
    return on


def write_csv(points: list[dict], path: Path) -> None:
    columns = ["label", "kind", "model", "iou", "params_used", "gflops", "latency_ms_b1", "latency_ms_b32",
               *[f"front_{c}" for c in COSTS], "source"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    markers = {"trained": "o", "distilled": "s", "evaluated": "o", "onnx": "D", "int8": "^"}
    figure, axes = plt.subplots(1, len(COSTS), figsize=(6 * len(COSTS), 4.8), constrained_layout=True)
    for ax, (cost, axis_label) in zip(axes, COSTS.items()):
        usable = [p for p in points if p[cost] and p[cost] > 0]
        for kind, marker in markers.items():
            chosen = [p for p in usable if p["kind"] == kind]
            if chosen:
                ax.scatter([p[cost] for p in chosen], [p["iou"] for p in chosen], marker=marker, s=40, label=kind,
                           alpha=0.8)
        front = sorted((p for p in usable if p[f"front_{cost}"]), key=lambda p: p[cost])
        if front:
            ax.step([p[cost] for p in front], [p["iou"] for p in front], where="post", color="black", lw=1,
                    label="Pareto front")
        for p in usable:
            ax.annotate(p["label"], (p[cost], p["iou"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"{axis_label}, log scale")
        ax.set_ylabel("IoU (validation)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def pareto(paths: list[Path], output_dir: Path, title: str = "IoU against cost") -> tuple[list[dict], list[str]]:
    """Points of every run under `paths`, the front on each cost, pareto.csv and pareto.png in `output_dir`;
    returns the points and the sources skipped (one line each)."""
    sources, skipped = find_sources(paths)
    points = []
    for source, label in sources.items():
        try:
            points += points_from(source, label)
        except (OSError, ValueError, KeyError, TypeError, CheckpointError) as error:
            skipped.append(f"{source}: {type(error).__name__}: {error}")
    if not points:
        raise DataError("no trained run found in " + ", ".join(map(str, paths)) + (
            "; " + "; ".join(skipped) if skipped else ""))
    for cost in COSTS:
        for p, on in zip(points, pareto_front(points, cost)):
            p[f"front_{cost}"] = on
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(points, output_dir / "pareto.csv")
    plot(points, output_dir / "pareto.png", title)
    return points, skipped
