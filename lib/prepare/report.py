"""The data report: what the model will see, per split and band (data_report.md, .json and .png).

For each split and band: patches, water and no-data shares, the 1st/50th/99th percentiles of the band over
water and over land pixels, the shares of water and land pixels outside the band's normalization range
(lib/data/bands.py; they are clipped to 0 or 1), and the IoU of the best single threshold on that band, fitted
on the split's train side and scored on the split itself.

Statistics are histograms over fixed edges per band (BINS_PER_RANGE bins across the normalization range,
MARGIN ranges either side, then one open bin each way up to the exact extremes), so any data size fits in
memory and a percentile is exact to one bin (within the margins); counts, shares, minima, maxima and the
out-of-range counts are exact.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.data.bands import BAND_RANGES, band_range
from lib.data.dataset import read_npy
from lib.data.labels import label_to_target
from lib.errors import DataError, OutputError
from lib.prepare.output import write_json
from lib.prepare.threshold import fit_threshold, threshold_iou

BINS_PER_RANGE = 2000
MARGIN = 2
PERCENTILES = (1, 50, 99)
FOLD = re.compile(r"^fold_(\d+)/(train|val)$")


def band_edges(band: str) -> np.ndarray:
    lo, hi = sorted(band_range(band))  # NDWI is stored inverted (lo > hi) in the "sar" table
    width = hi - lo
    return np.linspace(lo - MARGIN * width, hi + MARGIN * width, (2 * MARGIN + 1) * BINS_PER_RANGE + 1)


@dataclass
class ClassStats:
    """Histogram and exact extremes and out-of-range counts of one class's finite values."""
    counts: np.ndarray
    n: int = 0
    low: float = np.inf
    high: float = -np.inf
    below: int = 0                  # values < the range's lo (clipped to 0)
    above: int = 0                  # values > the range's hi (clipped to 1)

    def add(self, values: np.ndarray, edges: np.ndarray, lo: float, hi: float) -> None:
        if values.size == 0:
            return
        self.counts += np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        self.n += values.size
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        self.below += int((values < lo).sum())
        self.above += int((values > hi).sum())

    def merge(self, other: "ClassStats") -> None:
        self.counts += other.counts
        self.n += other.n
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.below += other.below
        self.above += other.above

    def percentile(self, q: float, edges: np.ndarray) -> float | None:
        """The value below which q% of the values lie (inverse CDF), linear within its bin."""
        if self.n == 0:
            return None
        goal = q / 100 * self.n
        cumulative = np.cumsum(self.counts)
        k = int(np.searchsorted(cumulative, goal, side="left"))
        start = max(edges[k - 1] if k >= 1 else self.low, self.low)
        stop = min(edges[k] if k < len(edges) else self.high, self.high)
        before = cumulative[k - 1] if k else 0
        fraction = (goal - before) / self.counts[k] if self.counts[k] else 0.0
        return float(start + fraction * (stop - start))


@dataclass
class BandStats:
    band: str
    patches: int = 0
    pixels: int = 0
    water: ClassStats = None
    land: ClassStats = None

    def __post_init__(self):
        self.edges = band_edges(self.band)
        self.lo, self.hi = sorted(band_range(self.band))
        self.water = self.water or ClassStats(np.zeros(len(self.edges) + 1, np.int64))
        self.land = self.land or ClassStats(np.zeros(len(self.edges) + 1, np.int64))

    def add(self, values: np.ndarray, target: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.patches += 1
        self.pixels += values.size
        self.water.add(values[finite & (target == 1)], self.edges, self.lo, self.hi)
        self.land.add(values[finite & (target == 0)], self.edges, self.lo, self.hi)

    def merge(self, other: "BandStats") -> None:
        self.patches += other.patches
        self.pixels += other.pixels
        self.water.merge(other.water)
        self.land.merge(other.land)


@dataclass
class SplitStats:
    name: str
    patches: int = 0
    bands: dict[str, BandStats] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    label_ids: set = field(default_factory=set)   # (device, inode) of the label files: finds shared patches

    def merge(self, other: "SplitStats") -> None:
        self.patches += other.patches
        for band, stats in other.bands.items():
            self.bands.setdefault(band, BandStats(band)).merge(stats)
        self.skipped.update(other.skipped)


def find_splits(root: Path) -> list[str]:
    """Split folders (holding img/ and lab/) directly under `root` or one level down (fold_k/train)."""
    if not root.is_dir():
        raise DataError(f"DATA_ROOT {str(root)!r}: not a folder")
    found = []
    for folder in sorted(root.iterdir()):
        if (folder / "img").is_dir() and (folder / "lab").is_dir():
            found.append(folder.name)
        elif folder.is_dir():
            found += [f"{folder.name}/{sub.name}" for sub in sorted(folder.iterdir())
                      if (sub / "img").is_dir() and (sub / "lab").is_dir()]
    if not found:
        raise DataError(f"DATA_ROOT {str(root)!r}: no split folder with img/ and lab/ (e.g. train/img, fold_1/val/img)")
    return sorted(found, key=split_order)


def split_order(name: str):
    fold = FOLD.match(name)
    return (1, int(fold.group(1)), fold.group(2)) if fold else (0, ["train", "val", "test"].index(name)
                                                                  if name in ("train", "val", "test") else 3, name)


def read_split(root: Path, name: str) -> SplitStats:
    """Statistics of one split folder, reading each patch's label once and each band file once."""
    folder = root / name
    stats = SplitStats(name)
    labels = {path.stem: path for path in sorted((folder / "lab").glob("*.npy"))}
    band_files: dict[str, dict[str, Path]] = {}
    for path in sorted((folder / "img").glob("*.npy")):
        patch_id, sep, band = path.stem.rpartition("_")
        if not sep:
            stats.skipped["file name without _{band}"] += 1
        elif band not in BAND_RANGES:
            stats.skipped[f"band {band}: no normalization range in lib/data/bands.py"] += 1
        elif patch_id not in labels:
            stats.skipped["band file without label"] += 1
        else:
            band_files.setdefault(patch_id, {})[band] = path
    for patch_id, label_path in labels.items():
        found = band_files.get(patch_id)
        if not found:
            stats.skipped["label without band files"] += 1
            continue
        target = label_to_target(read_npy(label_path))
        stats.label_ids.add(stat_id(label_path))
        stats.patches += 1
        for band in sorted(found, key=list(BAND_RANGES).index):
            values = read_npy(found[band]).astype(np.float32, copy=False)
            if values.shape != target.shape:
                raise DataError(f"{found[band]}: shape {values.shape}, but its label {label_path.name} has {target.shape}")
            stats.bands.setdefault(band, BandStats(band)).add(values, target)
    return stats


def collect(root: Path) -> dict[str, SplitStats]:
    """Statistics of every split. A fold's train side whose label files are exactly the other folds' val
    files (hard links, as prepare_data.py writes them) is summed from those, not read again."""
    names = find_splits(root)
    stats = {name: read_split(root, name) for name in names if not name.endswith("/train")}
    for name in [n for n in names if n.endswith("/train")]:
        fold = FOLD.match(name)
        others = [n for n in names if fold and FOLD.match(n) and n.endswith("/val") and FOLD.match(n).group(1) != fold.group(1)]
        ids = {stat_id(p) for p in (root / name / "lab").glob("*.npy")}
        union = set().union(*(stats[n].label_ids for n in others)) if others else set()
        if others and ids == union and len(ids) == sum(len(stats[n].label_ids) for n in others):
            merged = SplitStats(name, label_ids=ids)
            for other in others:
                merged.merge(stats[other])
            stats[name] = merged
        else:
            stats[name] = read_split(root, name)
    return {name: stats[name] for name in names}


def stat_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def reference_of(name: str, names) -> str | None:
    """The split a threshold for `name` is fitted on: its own train side."""
    fold = FOLD.match(name)
    if fold:
        return f"fold_{fold.group(1)}/train"
    if "train" in names:
        return "train"
    return "fold_1/train" if "fold_1/train" in names else None


def band_row(stats: BandStats, reference: BandStats | None, reference_name: str | None) -> dict:
    water, land = stats.water, stats.land
    valid = water.n + land.n
    row = {"patches": stats.patches, "pixels": stats.pixels, "water_pixels": water.n, "land_pixels": land.n,
           "water_share": water.n / valid if valid else None,
           "nodata_share": 1 - valid / stats.pixels if stats.pixels else None,
           "range": [stats.lo, stats.hi]}
    for cls_name, cls in (("water", water), ("land", land)):
        row[f"{cls_name}_percentiles"] = {f"p{q}": cls.percentile(q, stats.edges) for q in PERCENTILES}
        row[f"{cls_name}_min_max"] = [cls.low, cls.high] if cls.n else None
        row[f"{cls_name}_below_range"] = cls.below / cls.n if cls.n else None
        row[f"{cls_name}_above_range"] = cls.above / cls.n if cls.n else None
        row[f"{cls_name}_out_of_range"] = (cls.below + cls.above) / cls.n if cls.n else None
    fit = fit_threshold(reference.water.counts, reference.land.counts, reference.edges) if reference else None
    row["threshold"] = None if fit is None else {
        "fitted_on": reference_name, "value": fit["threshold"], "polarity": fit["polarity"],
        "rule": f"water where {stats.band} {'<' if fit['polarity'] == 'below' else '>='} {fit['threshold']:.4g}",
        "iou_fitted_on": fit["iou"], "iou": threshold_iou(water.counts, land.counts, fit)}
    return row


def build_report(root: Path, name: str | None = None) -> tuple[dict, dict[str, SplitStats]]:
    """The report of the layout in `root` (titled `name`, by default the folder itself) and its statistics."""
    stats = collect(root)
    splits = {}
    for name, split in stats.items():
        ref_name = reference_of(name, stats)
        ref_split = stats.get(ref_name) if ref_name else None
        splits[name] = {"patches": split.patches, "skipped": dict(split.skipped), "bands": {
            band: band_row(band_stats, ref_split.bands.get(band) if ref_split else None, ref_name)
            for band, band_stats in split.bands.items()}}
    return {"data_root": name or str(root), "splits": splits,
            "definitions": {"water_share": "water / (water + land) pixels with a finite band value",
                            "nodata_share": "pixels without a water/land label or without a finite band value",
                            "out_of_range": "share of the class's pixels below or above lib/data/bands.py BAND_RANGES "
                                            "(clipped to 0 or 1 by the normalization)",
                            "threshold": "best single threshold on the band, fitted on the split's train side "
                                         "(fitted_on), IoU of water scored on this split",
                            "percentiles": f"from histograms of {BINS_PER_RANGE} bins per normalization range"}}, stats


def pct(value) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if value == 0 or value >= 0.01 else f"{100 * value:.2g}%"


def num(value) -> str:
    return "–" if value is None else f"{value:.3g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def markdown(report: dict) -> str:
    lines = [f"# Data report: {report['data_root']}", "",
             "What the model will see, per split and band (written by prepare_data.py; "
             "`python prepare_data.py report DATA_ROOT` rewrites it). Percentiles p1/p50/p99 of the band's values "
             "over water and over land pixels; *out* = share of those pixels outside the normalization range "
             "of lib/data/bands.py (clipped to 0 or 1); threshold = best single threshold fitted on the train side, "
             "IoU scored on the split. Histograms: data_report.png.", ""]
    for name, split in report["splits"].items():
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(split["skipped"].items()))
        lines += [f"## {name}: {split['patches']} patches" + (f" (skipped {skipped})" if skipped else ""), "",
                  "| band | patches | water | no-data | range | water p1 / p50 / p99 | land p1 / p50 / p99 "
                  "| water out | land out | threshold (fitted on) | IoU fit | IoU here |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for band, row in split["bands"].items():
            wp, lp, t = row["water_percentiles"], row["land_percentiles"], row["threshold"]
            lines.append(
                f"| {band} | {row['patches']} | {pct(row['water_share'])} | {pct(row['nodata_share'])} "
                f"| {num(row['range'][0])} .. {num(row['range'][1])} "
                f"| {' / '.join(num(wp[k]) for k in wp)} | {' / '.join(num(lp[k]) for k in lp)} "
                f"| {pct(row['water_out_of_range'])} | {pct(row['land_out_of_range'])} "
                + (f"| {t['rule'].removeprefix('water where ')} ({t['fitted_on']}) | {num(t['iou_fitted_on'])} | {num(t['iou'])} |"
                   if t else "| – | – | – |"))
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, stats: dict[str, SplitStats], path: Path) -> None:
    """Water and land histograms of each band on the first train split, the range and the threshold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    name = next((n for n in stats if n.endswith("train")), next(iter(stats)))
    bands = list(stats[name].bands.values())
    if not bands:
        return
    columns = min(4, len(bands))
    rows = -(-len(bands) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for axis, band in zip(axes.flat, bands):
        row = report["splits"][name]["bands"][band.band]
        low, high = display_window(band, row)
        for cls, color in ((band.water, "tab:blue"), (band.land, "tab:brown")):
            centers, density = coarse_histogram(cls.counts, band.edges, low, high)
            axis.step(centers, density, where="mid", color=color, label="water" if cls is band.water else "land")
        axis.axvspan(band.lo, band.hi, color="0.9", zorder=0, label="range")
        if row["threshold"]:
            axis.axvline(row["threshold"]["value"], color="k", linestyle="--", linewidth=1, label="threshold")
        axis.set_title(f"{band.band} ({name})", fontsize=9)
        axis.set_yticks([])
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(bands):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def display_window(band: BandStats, row: dict) -> tuple[float, float]:
    values = [band.lo, band.hi] + [v for key in ("water_percentiles", "land_percentiles")
                                   for v in row[key].values() if v is not None]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low)
    return max(low - pad, band.edges[0]), min(high + pad, band.edges[-1])


def coarse_histogram(counts: np.ndarray, edges: np.ndarray, low: float, high: float, bins: int = 60):
    """Bin centres and shares of the fine histogram summed into about `bins` bins between low and high."""
    inner = counts[1:-1]  # inner[k]: edges[k] <= v < edges[k + 1]
    start, stop = int(np.searchsorted(edges, low)), int(np.searchsorted(edges, high))
    window = inner[start:stop]
    if window.size == 0:
        return np.zeros(0), np.zeros(0)
    step = max(1, window.size // bins)
    starts = np.arange(0, window.size, step)
    sums = np.add.reduceat(window, starts)
    centers = (edges[start + starts] + edges[np.minimum(start + starts + step, len(edges) - 1)]) / 2
    total = sums.sum()
    return centers, (sums / total if total else sums.astype(float))


def write_report(root: Path, name: str | None = None, out: Path | None = None) -> dict:
    """data_report.md, .json and .png in `out` (default `root`); returns the report."""
    report, stats = build_report(root, name)
    out = root if out is None else out
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "data_report.json", report)
        partial = out / ".data_report.md.partial"
        partial.write_text(markdown(report) + "\n")
        os.replace(partial, out / "data_report.md")
        plot(report, stats, out / "data_report.png")
    except OSError as error:
        raise OutputError(f"{out}: cannot write the data report ({error.strerror or error}); "
                          f"pass --out to write it elsewhere") from None
    return report
