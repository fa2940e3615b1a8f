"""IoU on the real chips against whole-scene throughput (pareto.py --real ... --throughput ...): one point per
model and band from a leave-one-chip-out benchmark_real.json (its pooled IoU over the held-out chips), its
float and int8 ONNX files and the threshold beside it, placed at the Mpx/s that benchmark.py --throughput
measured for them (the post-event pass of the plain run), with the Pareto front (no other point at least as
accurate and at least as fast)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from lib.bench.pareto import pareto_front
from lib.errors import DataError

VARIANTS = {"": "model", " ONNX float": "onnx", " ONNX int8": "int8"}  # throughput label suffix -> kind
THRESHOLD_LABEL = "threshold (--method threshold)"
COST = "s_per_mpx"


def parse_real(items: list[str]) -> list[tuple[str, Path]]:
    """--real LABEL=benchmark_real.json: LABEL names the model as the throughput rows do (UnetLight, ...)."""
    pairs = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise DataError(f"--real {item!r}: expected LABEL=benchmark_real.json, e.g. UnetLight=runs/br/benchmark_real.json")
        if not Path(path).is_file():
            raise DataError(f"--real {item!r}: {path} is not a file")
        pairs.append((label, Path(path)))
    return pairs


def throughput_rates(path: Path) -> dict[str, float]:
    """{label: Mpx/s of the post-event pass, plain run} from benchmark.py --throughput --json."""
    document = json.loads(Path(path).read_text())
    rows = (document.get("throughput") or {}).get("rows")
    if rows is None:
        raise DataError(f"{path}: not a benchmark.py --throughput --json file (no throughput rows)")
    return {row["label"]: row["pass_mpx_s"] for row in rows if row["run"] == "plain" and "error" not in row}


def real_points(real: list[tuple[str, Path]], rates: dict[str, float]) -> tuple[list[dict], list[str]]:
    """Points of every model (and its ONNX files) and of the threshold, per band; lines for what has no rate.
    ONNX files carry the IoU of the model they were exported from (float parity is exact to 1e-4 logits;
    int8 parity is export_onnx.py --int8's report, not measured here)."""
    points, missing = [], []
    for label, path in real:
        document = json.loads(path.read_text())
        for band, pooled in document["pooled"].items():
            for suffix, kind in VARIANTS.items():
                rate = rates.get(label + suffix)
                if rate is None:
                    missing.append(f"{label + suffix}: no plain row in the throughput file")
                    continue
                points.append({"label": f"{label + suffix} {band}", "kind": kind, "band": band,
                               "iou": float(pooled["model_iou"]), "mpx_s": rate, COST: 1 / rate, "source": str(path)})
            if THRESHOLD_LABEL in rates and not any(p["label"] == f"threshold {band}" for p in points):
                points.append({"label": f"threshold {band}", "kind": "threshold", "band": band,
                               "iou": float(pooled["threshold_iou"]), "mpx_s": rates[THRESHOLD_LABEL],
                               COST: 1 / rates[THRESHOLD_LABEL], "source": str(path)})
    return points, sorted(set(missing))


def pareto_real(real: list[tuple[str, Path]], throughput: Path, output_dir: Path, title: str) -> tuple[list, list]:
    """Points, front per band, pareto_real.csv and pareto_real.png in `output_dir`."""
    points, missing = real_points(real, throughput_rates(throughput))
    if not points:
        raise DataError("no model of --real has a throughput row: " + "; ".join(missing))
    for band in sorted({p["band"] for p in points}):
        chosen = [p for p in points if p["band"] == band]
        for p, on in zip(chosen, pareto_front(chosen, COST)):
            p["front"] = on
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "pareto_real.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "kind", "band", "iou", "mpx_s", "front", "source"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)
    plot_real(points, output_dir / "pareto_real.png", title)
    return points, missing


def plot_real(points: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bands = sorted({p["band"] for p in points})
    markers = {"model": "o", "onnx": "D", "int8": "^", "threshold": "x"}
    figure, axes = plt.subplots(1, len(bands), figsize=(6 * len(bands), 4.8), constrained_layout=True, squeeze=False)
    for ax, band in zip(axes[0], bands):
        chosen = [p for p in points if p["band"] == band]
        for kind, marker in markers.items():
            of_kind = [p for p in chosen if p["kind"] == kind]
            if of_kind:
                ax.scatter([p["mpx_s"] for p in of_kind], [p["iou"] for p in of_kind], marker=marker, s=40,
                           label=kind, alpha=0.8)
        front = sorted((p for p in chosen if p["front"]), key=lambda p: -p["mpx_s"])
        ax.step([p["mpx_s"] for p in front], [p["iou"] for p in front], where="post", color="black", lw=1,
                label="Pareto front")
        for p in chosen:
            ax.annotate(p["label"], (p["mpx_s"], p["iou"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("whole-scene mapping, Mpx/s (benchmark.py --throughput), log scale")
        ax.set_ylabel(f"pooled IoU, {band}, leave one chip out")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=120)
    plt.close(figure)
