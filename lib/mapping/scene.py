"""One scene, every product: water mask, probabilities, uncertainty, flood classes, polygons, quick-look,
summary, from a post-event scene (one or several band files) and optionally a pre-event scene, a
reference water raster and an exclusion raster.

    summary = map_scene(model, checkpoint["data"], [Path("post.tif")], SceneOutputs(mask=Path("water.tif"),
                        flood=Path("flood.tif"), polygons=Path("flood.gpkg")), SceneOptions(pre=Path("pre.tif")))

One way through (as ml4floods' inference: load, infer, vectorize, save): options and inputs are checked
(ranges, band numbers, units against the values, the tile against the model, outputs against inputs and
each other) on a `Scene` opened once (its files, reader, grid, dtypes and decimated samples), so bad
input never costs an output; then lib/mapping/products.py writes the outputs under temporary names
(lib/mapping/outputs.py), the GeoTIFFs as COGs, and they are renamed together at the end.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lib.errors import InferenceError
from lib.mapping import checks
from lib.mapping.change import build_change_test, change_report
from lib.mapping.flood import BeforeLayers
from lib.mapping.layers import check_layer_inputs, check_uncertainty, provenance_tags
from lib.mapping.methods import check_method, scene_mapper
from lib.mapping.options import FUSE, TTA, UNITS, Plan, SceneOptions, SceneOutputs, check_options
from lib.mapping.outputs import OutputSet, check_distinct
from lib.mapping.products import Layers, write_products
from lib.mapping import grids
from lib.mapping.rasters import (GDAL_CACHE_MB, InputFile, StackReader, decimated, is_georeferenced, open_aligned,
                                 open_input, to_db)
from lib.mapping.tiling import check_tile
from lib.mapping.vector import vector_driver

__all__ = ["FUSE", "TTA", "UNITS", "Scene", "SceneOptions", "SceneOutputs", "check_options", "map_scene"]


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def note_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def resolve_bands(inputs: list[Path], o: SceneOptions, data: dict) -> tuple[list[str], list[int]]:
    """(band names, 1-based raster band of each) for one multi-band file or one file per band."""
    default = data.get("input_bands") or [(data.get("val_bands") or data.get("train_bands"))[0]]
    bands = list(o.bands or default)
    if len(inputs) > 1:
        if len(bands) != len(inputs):
            raise InferenceError(f"{len(inputs)} band files need one --band name each (got {','.join(bands)})")
        raster_bands = list(o.raster_bands or [1] * len(inputs))
        if len(raster_bands) == 1:
            raster_bands *= len(inputs)
    else:
        raster_bands = list(o.raster_bands or range(1, len(bands) + 1))
    if len(raster_bands) != len(bands):
        raise InferenceError(f"--raster-band {','.join(map(str, raster_bands))} and --band {','.join(bands)} "
                             f"must name as many bands")
    for name in bands:
        if name not in data["normalization"]:
            raise InferenceError(f"band {name!r} has no normalization range in the checkpoint (it knows "
                                 f"{', '.join(data['normalization'])}); pass --band with one of those")
    return bands, raster_bands


def stacked_order(inputs: list[Path], bands: list[str], raster_bands: list[int], o: SceneOptions,
                  data: dict) -> tuple[list[Path], list[str], list[int], SceneOptions]:
    """A stacked checkpoint takes exactly its input bands, in its order: the bands, their raster bands and
    the files of one file per band (scene and --pre) put in that order; a band-agnostic one as given."""
    stack = list(data.get("input_bands") or [])
    if not stack:
        if o.threshold_band is not None:
            raise InferenceError("--threshold-band picks a band of a checkpoint trained with INPUT_BANDS; "
                                 "with this band-agnostic checkpoint give the band with --band")
        return inputs, bands, raster_bands, o
    if sorted(bands) != sorted(stack):
        raise InferenceError(f"the checkpoint was trained with INPUT_BANDS={'+'.join(stack)} (the bands as input "
                             f"channels): --band must name exactly {','.join(stack)} (any order), got {','.join(bands)}")
    order = [bands.index(band) for band in stack]
    if len(inputs) > 1:
        inputs = [inputs[i] for i in order]
    if o.pre and len(o.pre) > 1:
        o = replace(o, pre=[o.pre[i] for i in order])
    return inputs, stack, [raster_bands[i] for i in order], o


def band_groups(paths: list[Path], per_band: list) -> list[tuple[Path, list]]:
    """(file, its share of a per-band list: raster bands, band names): one file holds every band, or
    each file one band."""
    if len(paths) == 1:
        return [(paths[0], list(per_band))]
    return [(path, [item]) for path, item in zip(paths, per_band)]


def reader_band(wanted: list[int]) -> int | list[int]:
    """A reader's `band`: an int for one (it reads [rows, width]), the list for several ([bands, rows, width])."""
    return wanted if len(wanted) > 1 else wanted[0]


class Scene:
    """The files of one scene (one file with one or several bands read, or one single-band file per
    band), each opened once: the stacked `reader`, the `grid` (of the first file), per band its file,
    dtype and decimated `samples` for the checks, and the `closers` of everything opened for the run."""

    def __init__(self, paths: list[Path], bands: list[str], raster_bands: list[int], files: list[InputFile]):
        self.paths, self.bands, self.raster_bands, self.files = paths, bands, raster_bands, files
        readers = [f.reader for f in files]
        self.reader = readers[0] if len(readers) == 1 else StackReader(readers)
        self.grid = files[0].grid
        self.closers: list[Callable[[], None]] = [f.close for f in files]

    @classmethod
    def open(cls, paths: list[Path], bands: list[str], raster_bands: list[int],
             opener: Callable[[Path, object], InputFile]) -> "Scene":
        files = []
        try:
            for path, wanted in band_groups(paths, raster_bands):
                files.append(opener(path, reader_band(wanted)))
            grids.check_same_grid([f.path for f in files], [f.grid for f in files])
            return cls(paths, bands, raster_bands, files)
        except BaseException:
            for file in files:
                file.close()
            raise

    @property
    def band_files(self) -> list[InputFile]:
        """The file of each band."""
        return [file for file, (_, names) in zip(self.files, band_groups(self.paths, self.bands)) for _ in names]

    @cached_property
    def samples(self) -> list[tuple[np.ndarray, str]]:
        """(decimated copy, dtype) of each band, for the input checks."""
        return [(file.decimated(checks.SAMPLE_SIDE, band), file.dtype(band))
                for file, band in zip(self.band_files, self.raster_bands)]

    def infos(self) -> list[dict]:
        """Per file: path, size, CRS, bands in the file and read (the summary's "inputs")."""
        return [{"path": str(f.path), "width": f.reader.width, "height": f.reader.height,
                 "crs": None if f.grid.get("crs") is None else f.grid["crs"].to_string(),
                 "bands_in_file": f.count, "bands_read": wanted}
                for f, (_, wanted) in zip(self.files, band_groups(self.paths, self.raster_bands))]

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def open_input_checked(path: Path, band) -> InputFile:
    checks.check_file(path, "the scene")
    return open_input(path, band)


def open_auxiliary(path: Path, role: str, grid: dict, band, resampling: str, warn: Callable) -> InputFile:
    """A raster of the flood layers on the scene's grid (lib/mapping/grids.py), with a warning when it
    covers little or none of the scene or has no valid value there."""
    file = open_aligned(path, grid, band, resampling, role=role, warn=warn)
    try:
        sample = decimated(file.reader.dataset, checks.SAMPLE_SIDE, file.reader.bands[0])  # on the scene's grid
        reprojected = file.reader.dataset is not file.source
        grids.check_coverage(path, role, file.source if reprojected else None, grid, sample, warn)
    except BaseException:
        file.close()
        raise
    return file


def check_scene_values(scene: Scene, plan: Plan, data: dict, warn: Callable) -> None:
    for file, band, raster_band, prep, (sample, dtype) in zip(scene.band_files, scene.bands, scene.raster_bands,
                                                             plan.preprocessors, scene.samples):
        checks.check_units(file.path, sample, dtype, plan.units, band, data["normalization"], raster_band, warn,
                           lambda v: to_db(v, plan.units, float(data.get("calibration_db", 0.0))))
        checks.check_nodata_share(file.path, sample, prep(sample)[1], plan.units, warn)


def note_bands(scene: Scene, note: Callable) -> None:
    """Which bands of each multi-band scene file are read (the pre-event scene reads the same ones)."""
    for (path, names), info in zip(band_groups(scene.paths, scene.bands), scene.infos()):
        checks.note_band(path, info["bands_in_file"], info["bands_read"], names, note)


def check_output_kinds(outputs: SceneOutputs, georeferenced: bool) -> None:
    if outputs.polygons is not None:
        vector_driver(outputs.polygons)
        if not georeferenced:
            raise InferenceError(f"{outputs.polygons}: polygons need a georeferenced input (a CRS and a transform)")
    for name in ("flood", "uncertainty"):
        path = getattr(outputs, name)
        if path is not None and path.suffix.lower() not in (".tif", ".tiff", ".npy"):
            raise InferenceError(f"{path}: the --{name} raster is written as a GeoTIFF (.tif) or .npy")


def open_layers(scene: Scene, plan: Plan, data: dict, warn: Callable) -> Layers:
    """Readers on the scene's grid: the pre-event scene (bilinear), the reference water and the exclusion
    raster (nearest); their values checked like the scene's. Their closers join the scene's."""
    o, grid = plan.options, scene.grid
    layers = Layers(BeforeLayers(None, None, o.reference_threshold, o.threshold))
    if o.pre:
        pre_paths = [Path(p) for p in o.pre]
        if len(pre_paths) not in (1, len(scene.bands)):
            raise InferenceError(f"--pre: give one file, or one per band ({len(scene.bands)}), got {len(pre_paths)}")
        pre = Scene.open(pre_paths, scene.bands, scene.raster_bands,
                         lambda path, band: open_auxiliary(path, "pre-event", grid, band, "bilinear", warn))
        scene.closers += pre.closers
        check_scene_values(pre, plan, data, warn)
        layers.pre_reader = pre.reader
        layers.change, layers.change_record = build_change_test(
            o.change_db, scene.reader, pre.reader, [s for s, _ in scene.samples], [s for s, _ in pre.samples],
            plan.units, float(data.get("calibration_db", 0.0)))
    if o.reference_water:
        reference = open_auxiliary(o.reference_water, "reference water", grid, 1, "nearest", warn)
        scene.closers.append(reference.close)
        layers.before.reference = reference.reader
    if o.exclude:
        excluded = open_auxiliary(o.exclude, "exclusion", grid, 1, "nearest", warn)
        scene.closers.append(excluded.close)
        layers.excluded = excluded.reader
    if o.dem:
        dem = open_aligned(o.dem, grid, 1, "bilinear")
        scene.closers.append(dem.close)
        layers.dem = dem.reader
    return layers


def map_scene(model: nn.Module, data: dict, inputs: list[Path], outputs: SceneOutputs,
              options: SceneOptions | None = None, *, model_info: dict | None = None,
              warn: Callable[[str], None] = warn_stderr, note: Callable[[str], None] = note_stderr,
              tile_checked: bool = False) -> dict:
    """Map one scene (see the module docstring); returns the summary (also written to outputs.summary).
    tile_checked: the caller has run check_tile for this model and tile (map_batch does, once)."""
    import rasterio
    o = options or SceneOptions()
    started = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    check_options(o)
    bands, raster_bands = resolve_bands(inputs, o, data)
    inputs, bands, raster_bands, o = stacked_order(inputs, bands, raster_bands, o, data)
    plan = Plan.resolve(o, data, bands)
    check_method(o.method, [bands[plan.backscatter]] if plan.stacked else bands)
    check_distinct(outputs.named(), {**{f"scene ({p.name})": p for p in inputs},
                                     **{f"pre-event ({p.name})": p for p in (o.pre or [])},
                                     "reference water": o.reference_water, "exclusion": o.exclude, "DEM": o.dem,
                                     "checkpoint": (model_info or {}).get("checkpoint")})
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024):
        scene = Scene.open(inputs, bands, raster_bands, open_input_checked)
        try:
            check_output_kinds(outputs, is_georeferenced(scene.grid))
            check_uncertainty(outputs, o.tta, bands, plan.stacked)
            check_layer_inputs(outputs, o, is_georeferenced(scene.grid))
            check_scene_values(scene, plan, data, warn)
            note_bands(scene, note)
            if plan.stacked and o.fuse != "mean":
                note(f"--fuse {o.fuse} is unused: the checkpoint takes {'+'.join(bands)} at once (one probability)")
            if outputs.flood and not (o.pre or o.reference_water):
                warn("no --pre or --reference-water: every water pixel is flood (class 1) in the flood raster")
            layers = open_layers(scene, plan, data, warn)
            if not tile_checked:
                check_tile(model, plan.tile, torch.device(o.device), len(bands) if plan.stacked else 1)
            band = plan.backscatter
            db_sample = to_db(scene.samples[band][0], plan.units, float(data.get("calibration_db", 0.0)))
            mapper, method = scene_mapper(o.method, model, db_sample, bands[band], data, o.baseline,
                                          (model_info or {}).get("checkpoint") or "the checkpoint", band)
            with OutputSet() as files:
                result = write_products(mapper, scene, layers, plan, outputs, files,
                                        provenance_tags(model_info, o, inputs, plan.temperature))
                summary = scene_summary(result, scene, plan, outputs, model_info, started)
                summary["method"] = method
                if o.pre:
                    summary["change"] = change_report(layers.change_record, result["flood"])
                if outputs.summary:
                    write_json(summary, files.add(outputs.summary))
                files.commit()
        finally:
            scene.close()
    return summary


def scene_summary(result: dict, scene: Scene, plan: Plan, outputs: SceneOutputs, model_info: dict | None,
                  started: float) -> dict:
    o, stats, sink = plan.options, result["stats"], result["mask_sink"]
    megapixels = stats["height"] * stats["width"] / 1e6
    info = dict(model_info or {})
    if info.get("checkpoint") and "checkpoint_sha256" not in info:  # predict.py hashes once for all scenes
        from lib.checkpoint import file_sha256
        info["checkpoint_sha256"] = file_sha256(Path(info["checkpoint"]))
    timings = {**result["timings"], "total_s": time.perf_counter() - started}
    return {**stats, "band": ",".join(scene.bands), "units": plan.units, "tile": plan.tile, "overlap": plan.overlap,
            "batch_size": o.batch_size, "threshold": o.threshold, "tta": o.tta,
            "fuse": None if plan.stacked else o.fuse, "stacked": plan.stacked,
            "water_fraction": sink.water / max(sink.valid, 1),
            "nodata_pixels": stats["height"] * stats["width"] - sink.valid,
            "megapixels_per_s": megapixels / max(stats["seconds"], 1e-9),
            "output": str(outputs.mask),
            "probability": str(outputs.probability) if outputs.probability else None,
            "quicklook": str(outputs.quicklook) if outputs.quicklook else None,
            "outputs": {k: str(v) for k, v in outputs.named().items() if v is not None},
            "model": {k: str(v) if isinstance(v, Path) else v for k, v in info.items()},
            "inputs": scene.infos(),
            "pre_event": [str(p) for p in o.pre] if o.pre else None,
            "reference_water": str(o.reference_water) if o.reference_water else None,
            "reference_threshold": o.reference_threshold, "min_area_m2": o.min_area_m2, "simplify_m": o.simplify_m,
            "exclude": str(o.exclude) if o.exclude else None,
            "likelihood_temperature": plan.temperature, "dem": str(o.dem) if o.dem else None,
            "water": result["water"], "flood": result["flood"], "polygons": result["polygons"],
            "footprint": result.get("footprint"),
            "timings": timings}


def write_json(data: dict, path: Path) -> None:
    import json
    from lib.checkpoint import plain
    path.write_text(json.dumps(plain(data), indent=2) + "\n")
