"""The --method table of benchmark_real.py (METHODS=model,threshold,ensemble): each held-out chip mapped whole,
as predict.py maps a scene, with each of predict.py's methods, one band at a time.

A chip is its patches put back at their windows (`{chip}_r{i}c{j}`: rows from i x side, columns from j x side,
prepare_data.py's default stride, no overlap), so the scene threshold of `--method threshold` is fitted on the
whole chip, as on the original file. It is written to a temporary GeoTIFF and mapped by map_scene (predict.py's
engine: tiles, blending, input checks, lib/mapping/methods.py) with the checkpoint's recorded thresholds as the
fallback; the water mask is scored against the stitched label (0 land, 1 water, anything else no-data).

A checkpoint trained with the bands stacked as input channels (INPUT_BANDS) maps the chip's stacked bands
(one GeoTIFF band each); its table keeps one column per band: `model` (the same in each), `threshold` on that
band and `ensemble` of the model with that band's threshold (predict.py --threshold-band).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from lib.bench.chip_table import cell, scores
from lib.data.bands import band_unit
from lib.errors import ConfigError
from lib.mapping.options import SceneOptions
from lib.train.baseline import counts

PATCH_POSITION = re.compile(r"_r(\d+)c(\d+)$")


def stitch(patches: list, band: str) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, NaN where no patch; label uint8, 255 where no patch) of one chip's patches."""
    first = np.load(patches[0].label)
    side_r, side_c = first.shape
    places = [tuple(int(v) for v in PATCH_POSITION.search(p.patch_id).groups()) for p in patches]
    rows, cols = max(i for i, _ in places) + 1, max(j for _, j in places) + 1
    image = np.full((rows * side_r, cols * side_c), np.nan, np.float32)
    label = np.full(image.shape, 255, np.uint8)
    for patch, (i, j) in zip(patches, places):
        window = np.s_[i * side_r:(i + 1) * side_r, j * side_c:(j + 1) * side_c]
        image[window] = np.load(patch.bands[band])
        label[window] = np.load(patch.label)
    return image, label


def method_bands(groups: dict, data: dict) -> list[str]:
    """The backscatter bands in dB (VV, VH, HH) that every chip has and the checkpoint normalizes (a stacked
    checkpoint: its input bands, which every chip must have)."""
    stack = data.get("input_bands")
    everywhere = [b for b in stack or data["normalization"] if all(b in p.bands for patches in groups.values()
                                                                   for p in patches)]
    if stack and everywhere != list(stack):
        raise ConfigError(f"METHODS: the checkpoint stacks {'+'.join(stack)} (INPUT_BANDS) but not every chip has "
                          f"{', '.join(b for b in stack if b not in everywhere)}")
    bands = [b for b in everywhere if band_unit(b) == "dB"]
    if not bands:
        raise ConfigError("METHODS: no backscatter band in dB (VV, VH, HH) that every chip has and the checkpoint "
                          f"normalizes ({', '.join(data['normalization'])})")
    return bands


def write_scene(image: np.ndarray, path: Path) -> None:
    """A float32 GeoTIFF of [H, W] or [bands, H, W]."""
    import rasterio
    from affine import Affine
    image = image if image.ndim == 3 else image[None]
    profile = {"driver": "GTiff", "width": image.shape[2], "height": image.shape[1], "count": len(image),
               "dtype": "float32", "nodata": float("nan"),
               "transform": Affine(1, 0, 0, 0, -1, image.shape[1])}  # pixel units, no CRS (not the identity: no warning)
    with rasterio.open(path, "w", **profile) as out:
        out.write(image)


def confusion(mask: np.ndarray, label: np.ndarray) -> list[int]:
    """(tp, fp, fn, tn) of the labelled pixels that the mask maps (255 in either: left out)."""
    scored = np.isin(label, (0, 1)) & (mask != 255)
    return counts(mask[scored] == 1, label[scored] == 1).tolist()


def map_chip(model, checkpoint: dict, path: Path, patches: list, bands: list[str], methods: list[str]) -> dict:
    """{"counts": {method: {band: counts}}, "thresholds": {band: the threshold method's record}} of one chip."""
    stack = checkpoint["data"].get("input_bands")
    record = {"counts": {m: {} for m in methods}, "thresholds": {}}
    with tempfile.TemporaryDirectory() as folder:
        scene = Path(folder) / "stacked.tif"
        if stack:
            stitched = [stitch(patches, b) for b in stack]
            write_scene(np.stack([image for image, _ in stitched]), scene)
            label = stitched[0][1]
        for band in bands:
            if not stack:
                image, label = stitch(patches, band)
                scene = Path(folder) / f"{band}.tif"
                write_scene(image, scene)
            for method in methods:
                if stack and method == "model" and record["counts"]["model"]:  # one stacked model for every band
                    record["counts"]["model"][band] = next(iter(record["counts"]["model"].values()))
                    continue
                options = SceneOptions(bands=None if stack else [band], threshold_band=band if stack else None,
                                       method=method, baseline=checkpoint.get("baseline"), progress=False)
                tally, summary = map_and_score(model, checkpoint, path, scene, label, options,
                                                Path(folder) / f"{band}_{method}_water.tif")
                record["counts"][method][band] = tally
                if method != "model":
                    record["thresholds"][band] = {k: summary["method"].get(k) for k in
                                                  ("threshold_db", "source", "separability")}
    return record


def map_and_score(model, checkpoint: dict, path: Path, scene: Path, label: np.ndarray, options, mask: Path):
    """(confusion counts, summary) of one scene mapped by map_scene."""
    import rasterio
    from lib.mapping.scene import SceneOutputs, map_scene
    summary = map_scene(model, checkpoint["data"], [scene], SceneOutputs(mask=mask), options,
                        model_info={"checkpoint": str(path)}, note=lambda m: None)
    with rasterio.open(mask) as opened:
        return confusion(opened.read(1), label), summary


def summarize_methods(chips: dict[str, dict], methods: list[str]) -> dict:
    """Per band: each chip's scores per method, and the scores of the counts summed over chips (pooled)."""
    bands = list(next(iter(chips.values()))["counts"][methods[0]])
    table = {}
    for band in bands:
        rows = {chip: {m: scores(r["counts"][m][band]) for m in methods} for chip, r in chips.items()}
        pooled = {m: scores(np.sum([r["counts"][m][band] for r in chips.values()], axis=0)) for m in methods}
        pooled_counts = {m: np.sum([r["counts"][m][band] for r in chips.values()], axis=0).tolist() for m in methods}
        table[band] = {"chips": rows, "pooled": pooled, "pooled_counts": pooled_counts,
                       "thresholds": {chip: r["thresholds"].get(band) for chip, r in chips.items()}}
    return {"bands": bands, "methods": methods, "table": table}


def threshold_text(record: dict | None) -> str:
    if not record:
        return "-"
    eta = record.get("separability")
    return (f"{record['threshold_db']:.1f} dB, {record['source']}"
            + (f" ({eta:.2f})" if eta is not None else ""))


def methods_markdown(summary: dict) -> str:
    """One table per band: chips as rows, the IoU of each method (FP share on a chip without water), pooled."""
    methods, blocks = summary["methods"], []
    for band in summary["bands"]:
        entry = summary["table"][band]
        lines = [f"| {band} | " + " | ".join(f"`{m}` IoU" for m in methods) + " | threshold (separability) |",
                 "|---|" + "---|" * (len(methods) + 1)]
        for chip, row in entry["chips"].items():
            values = [cell(row[m]["iou"]) if row[m]["iou"] is not None else f"FP {cell(row[m]['fp_share'], True)}"
                      for m in methods]
            lines.append(f"| {chip} | " + " | ".join(values) + f" | {threshold_text(entry['thresholds'][chip])} |")
        best = max(methods, key=lambda m: entry["pooled"][m]["iou"] or 0.0)
        values = [f"**{cell(entry['pooled'][m]['iou'])}**" if m == best else cell(entry["pooled"][m]["iou"])
                  for m in methods]
        lines.append(f"| pooled over {len(entry['chips'])} chips | " + " | ".join(values) + " | |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
