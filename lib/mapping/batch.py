"""Many scenes: one output set per scene in one folder, a summary.csv with one row per scene, a failing
scene reported and skipped, restart with --resume-batch, and scale-out under torchrun.

    python predict.py best.pt 'scenes/*.tif' --out-dir maps --flood flood.tif --polygons flood.gpkg
    torchrun --nproc_per_node 4 predict.py best.pt 'scenes/*.tif' --out-dir maps --resume-batch

Scene `S.tif` gets `DIR/S_water.tif` (the mask), `DIR/S_summary.json`, and for every output option given
`DIR/S_<its file name>` (`--flood flood.tif` -> `DIR/S_flood.tif`). `--pre` may name one file for all
scenes or a pattern with {stem} (`--pre 'pre/{stem}.tif'`). Under torchrun (lib.train.engine's process group)
scene i goes to rank i mod world size; each rank writes its own scenes, rank 0 gathers the rows and
writes summary.csv. A scene is complete when its summary.json and every output exist (final names only
appear when a scene has succeeded, lib/mapping/outputs.py); --resume-batch skips those.
"""
from __future__ import annotations

import csv
import glob
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

from lib.errors import InferenceError
from lib.mapping.outputs import temporary_name
from lib.mapping.options import resolve_tile
from lib.mapping import resume as resuming
from lib.mapping.scene import SceneOptions, SceneOutputs, check_options, map_scene
from lib.mapping.tiling import check_tile
from lib.mapping.vector import vector_driver

SUMMARY_CSV = "summary.csv"
CSV_FIELDS = ("scene", "status", "seconds", "width", "height", "water_fraction", "water_km2", "flood_km2",
              "permanent_or_pre_event_water_km2", "nodata_share", "polygons", "error")
GLOB_CHARS = set("*?[")


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files and globs (quoted ones too, expanded here), in the order given, each file once."""
    paths: list[Path] = []
    for pattern in patterns:
        if GLOB_CHARS & set(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise InferenceError(f"{pattern}: matches no file")
            paths += [Path(m) for m in matches]
        else:
            paths.append(Path(pattern))
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


BATCH_LAYERS = ("observed_water", "reference_out", "exclusion_out", "likelihood", "flags", "footprint",
                "flood_quicklook")  # lib/mapping/layers.py


def scene_outputs(scene: Path, out_dir: Path, template: SceneOutputs) -> SceneOutputs:
    """The output set of one scene: DIR/<stem>_<name> for every output the template names."""
    def named(path: Path | None) -> Path | None:
        return None if path is None else out_dir / f"{scene.stem}_{Path(path).name}"
    return SceneOutputs(mask=out_dir / f"{scene.stem}_water.tif", probability=named(template.probability),
                        quicklook=None if template.quicklook is None else out_dir / f"{scene.stem}_water.png",
                        flood=named(template.flood), polygons=named(template.polygons),
                        summary=named(template.summary or Path("summary.json")),
                        uncertainty=named(template.uncertainty),
                        **{name: named(getattr(template, name)) for name in BATCH_LAYERS})


def pre_for(scene: Path, pre: list[str] | None) -> list[Path] | None:
    return None if not pre else [Path(p.format(stem=scene.stem)) for p in pre]


def complete(outputs: SceneOutputs) -> bool:
    return all(Path(p).is_file() for p in outputs.named().values() if p is not None)


def row_of(scene: Path, status: str, seconds: float, summary: dict | None = None, error: str = "") -> dict:
    row = {"scene": str(scene), "status": status, "seconds": round(seconds, 3), "error": error}
    if summary:
        flood = (summary.get("flood") or {}).get("classes", {})
        water = summary.get("water") or {}
        row.update(width=summary["width"], height=summary["height"],
                   water_fraction=round(summary["water_fraction"], 6),
                   water_km2=water.get("classes", {}).get("water", {}).get("area_km2"),
                   flood_km2=flood.get("flood", {}).get("area_km2"),
                   permanent_or_pre_event_water_km2=flood.get("permanent_or_pre_event_water", {}).get("area_km2"),
                   nodata_share=round((summary.get("flood") or water).get("nodata_share", 0.0), 6),
                   polygons=(summary.get("polygons") or {}).get("polygons"))
    return row


def check_scene_names(scenes: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for scene in scenes:
        if scene.stem in seen:
            raise InferenceError(f"{scene} and {seen[scene.stem]} share the name {scene.stem!r}: their outputs "
                                 f"would overwrite each other in --out-dir; rename one or run them apart")
        seen[scene.stem] = scene


def map_batch(model, data: dict, scenes: list[Path], out_dir: Path, template: SceneOutputs, options: SceneOptions,
              *, pre: list[str] | None = None, resume: bool = False, rank: int = 0, world_size: int = 1,
              gather: Callable[[list], list] | None = None, model_info: dict | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
    """Map this rank's share of `scenes` into `out_dir`; returns every scene's row (all ranks' when
    `gather` merges them) and, on rank 0, writes out_dir/summary.csv."""
    from tqdm import tqdm
    import torch
    check_options(options)  # a bad option is one error before any scene, not a failure of each
    check_tile(model, resolve_tile(options, data)[0], torch.device(options.device),  # once for every scene
               len(data.get("input_bands") or ()) or 1)
    if template.polygons is not None:
        vector_driver(template.polygons)
    check_scene_names(scenes)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = scenes[rank::world_size]
    kept = kept_scenes(mine, out_dir, template, options, data, pre, model_info, rank, log) if resume else {}
    rows = []
    bar = tqdm(mine, desc=f"scenes (rank {rank})" if world_size > 1 else "scenes", unit="scene",
               disable=None if options.progress else True)
    for scene in bar:
        outputs = scene_outputs(scene, out_dir, template)
        started = time.perf_counter()
        if scene in kept:
            rows.append(row_of(scene, "skipped (complete)", 0.0, kept[scene]))
            continue
        try:
            summary = map_scene(model, data, [scene], outputs, replace(options, pre=pre_for(scene, pre)),
                                model_info=model_info, tile_checked=True)
            rows.append(row_of(scene, "ok", time.perf_counter() - started, summary))
        except Exception as error:  # noqa: BLE001 - one failing scene must not stop the batch
            message = str(error) if str(error) else traceback.format_exc(limit=1)
            log(f"error: {scene}: {type(error).__name__}: {message}")
            rows.append(row_of(scene, "failed", time.perf_counter() - started, error=f"{type(error).__name__}: "
                                                                                       f"{message}"))
    bar.close()
    if gather is not None:
        rows = gather(rows)
    if rank == 0:
        order = {str(s): i for i, s in enumerate(scenes)}
        rows.sort(key=lambda r: order.get(r["scene"], len(order)))
        write_csv(rows, out_dir / SUMMARY_CSV)
    return rows


def kept_scenes(scenes: list[Path], out_dir: Path, template: SceneOutputs, options: SceneOptions, data: dict,
                pre: list[str] | None, model_info: dict | None, rank: int, log: Callable) -> dict[Path, dict]:
    """--resume-batch: {scene: summary} of the complete scenes mapped with the settings asked for now; one
    mapped otherwise is an error before any scene (lib/mapping/resume.py). Rank 0 first removes the scratch
    files a killed batch left."""
    if rank == 0:
        resuming.remove_scratch(out_dir, log)
    kept = {}
    for scene in scenes:
        outputs = scene_outputs(scene, out_dir, template)
        if not complete(outputs):
            continue
        summary = resuming.read_summary(outputs.summary)
        if summary is None:
            log(f"note: {outputs.summary} cannot be read; {scene} is mapped again")
            continue
        wanted = resuming.requested(scene, replace(options, pre=pre_for(scene, pre)), data, model_info)
        resuming.check_kept(scene, summary, wanted)
        kept[scene] = summary
    return kept


def write_csv(rows: list[dict], path: Path) -> None:
    temporary = temporary_name(path)
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_FIELDS})
    temporary.replace(path)


def torch_gather(rows: list) -> list:
    """Every rank's rows, on every rank (torch.distributed.all_gather_object)."""
    import torch.distributed as dist
    merged: list = [None] * dist.get_world_size()
    dist.all_gather_object(merged, rows)
    return [row for part in merged for row in part]
