"""One scene, every product: water mask, probabilities, uncertainty, flood classes, polygons, quick-look,
summary, from a post-event scene (one or several band files) and optionally a pre-event scene, a
reference water raster and an exclusion raster.

    summary = map_scene(model, checkpoint["data"], [Path("post.tif")], SceneOutputs(mask=Path("water.tif"),
                        flood=Path("flood.tif"), polygons=Path("flood.gpkg")), SceneOptions(pre=Path("pre.tif")))

Order of work, so that bad input never costs an output: options and inputs are checked (ranges, band
numbers, units against the values, the tile against the model, outputs against inputs and each other),
then the outputs are written under temporary names (lib/mapping/outputs.py), the GeoTIFFs as COGs, and
renamed together at the end. A pre-event scene is mapped first, on the post-event grid, into a scratch
probability raster that the post-event pass reads row by row.
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lib.errors import InferenceError, OutputError
from lib.mapping.inference import (FUSE, GDAL_CACHE_MB, MASK_BLOCK, NODATA, TTA, UNITS, ArrayWriter, MaskSink, RasterReader,
                           RasterWriter, StackReader, check_tile, default_units, make_preprocess, predict_tiled,
                           read_decimated, tile_origins, write_quicklook)
from lib.mapping import checks
from lib.mapping.cog import write_cog
from lib.mapping.flood import (COLORMAP, MASK_COLORMAP, BeforeLayers, ClassTally, FloodSink, aligned_reader,
                               is_georeferenced)
from lib.mapping.outputs import OutputSet, check_distinct
from lib.mapping.vector import PROBABILITY_NODATA, PROBABILITY_SCALE, polygonize, vector_driver, write_polygons



@dataclass
class SceneOptions:
    bands: list[str] | None = None          # band names (VV, VH); default the checkpoint's first val band
    raster_bands: list[int] | None = None   # 1-based bands of a one-file input, one per band name
    units: str | None = None                # db, linear, amplitude; default by checkpoint format
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    threshold: float = 0.5
    tta: str = "none"
    fuse: str = "mean"
    device: str | torch.device = "cpu"
    precision: str = "fp32"
    progress: bool = True
    pre: list[Path] | None = None           # pre-event scene: one file, or one per band
    reference_water: Path | None = None
    reference_threshold: float | None = None
    exclude: Path | None = None
    min_area_m2: float = 0.0
    simplify_m: float = 0.0


@dataclass
class SceneOutputs:
    mask: Path
    probability: Path | None = None
    quicklook: Path | None = None
    flood: Path | None = None
    polygons: Path | None = None
    summary: Path | None = None
    uncertainty: Path | None = None

    def named(self) -> dict[str, Path | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def note_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ checking

def check_options(o: SceneOptions) -> None:
    checks.check_range("--batch-size", o.batch_size, 1, integer=True)
    checks.check_range("--threshold", o.threshold, 0.0, 1.0, low_open=True, high_open=True)
    checks.check_range("--tile", o.tile, 1, integer=True)
    checks.check_range("--overlap", o.overlap, 0, integer=True)
    checks.check_range("--reference-threshold", o.reference_threshold)
    checks.check_range("--min-area-m2", o.min_area_m2, 0.0)
    checks.check_range("--simplify-m", o.simplify_m, 0.0)
    if o.tta not in TTA:
        raise InferenceError(f"--tta must be one of {', '.join(TTA)}, got {o.tta!r}")
    if o.fuse not in FUSE:
        raise InferenceError(f"--fuse must be one of {', '.join(FUSE)}, got {o.fuse!r}")
    if o.units is not None and o.units not in UNITS:
        raise InferenceError(f"--units must be one of {', '.join(UNITS)}, got {o.units!r}")


def resolve_bands(inputs: list[Path], o: SceneOptions, data: dict) -> tuple[list[str], list[int]]:
    """(band names, 1-based raster band of each) for one multi-band file or one file per band."""
    bands = list(o.bands or [(data.get("val_bands") or data.get("train_bands"))[0]])
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


def band_groups(paths: list[Path], per_band: list) -> list[tuple[Path, list]]:
    """(file, its share of a per-band list: raster bands, band names): one file holds every band, or
    each file one band."""
    if len(paths) == 1:
        return [(paths[0], list(per_band))]
    return [(path, [item]) for path, item in zip(paths, per_band)]


def reader_band(wanted: list[int]) -> int | list[int]:
    """A reader's `band`: an int for one (it reads [rows, width]), the list for several ([bands, rows, width])."""
    return wanted if len(wanted) > 1 else wanted[0]


def stacked(readers: list):
    """One reader of the scene's bands: the file's own, or the band files' stacked."""
    return readers[0] if len(readers) == 1 else StackReader(readers)


def open_scene(paths: list[Path], raster_bands: list[int]):
    """(reader, grid, closers, info per file) of a scene: one file with one or several bands read, or one
    single-band file per band."""
    from lib.mapping.inference import open_input
    readers, closers, infos, grid = [], [], [], None
    try:
        for path, wanted in band_groups(paths, raster_bands):
            if not path.is_file():
                raise InferenceError(f"{path}: input not found")
            reader, geo, close = open_input(path, reader_band(wanted))
            closers.append(close)
            readers.append(reader)
            info = {"path": str(path), "width": reader.width, "height": reader.height,
                    "crs": None if geo.get("crs") is None else geo["crs"].to_string(),
                    "bands_in_file": getattr(getattr(reader, "dataset", None), "count", 1), "bands_read": wanted}
            infos.append(info)
            if grid is None:
                grid = {**geo, "height": reader.height, "width": reader.width}
    except BaseException:
        for close in closers:
            close()
        raise
    return stacked(readers), grid, closers, infos


def sample_of(path: Path, raster_band: int) -> tuple[np.ndarray, str]:
    """(decimated copy of one band, the raster's dtype) for the input checks."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return read_decimated(path, checks.SAMPLE_SIDE, raster_band), str(array.dtype)
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as dataset:
            dtype = dataset.dtypes[raster_band - 1]
    return read_decimated(path, checks.SAMPLE_SIDE, raster_band), dtype


def check_scene_values(paths: list[Path], bands: list[str], raster_bands: list[int], units: str, data: dict,
                       preprocessors: list, warn: Callable) -> None:
    files = [path for path, names in band_groups(paths, bands) for _ in names]  # the file of each band
    for path, band, raster_band, prep in zip(files, bands, raster_bands, preprocessors):
        sample, dtype = sample_of(path, raster_band)
        checks.check_units(path, sample, dtype, units, band, data["normalization"], raster_band, warn)
        checks.check_nodata_share(path, sample, prep(sample)[1], units, warn)


def note_bands(paths: list[Path], bands: list[str], infos: list[dict], note: Callable) -> None:
    """Which bands of each multi-band scene file are read (the pre-event scene reads the same ones)."""
    for (path, names), info in zip(band_groups(paths, bands), infos):
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


# ------------------------------------------------------------------------------------------- writing

class RasterProduct:
    """One single-band output raster: written strip by strip to a scratch GeoTIFF (or straight into a
    .npy memory map), then copied as a COG to its temporary name."""

    def __init__(self, final: Path, outputs: OutputSet, grid: dict, dtype: str, nodata, colormap=None,
                 as_cog: bool = True):
        self.final, self.dtype, self.colormap = Path(final), dtype, colormap
        self.temporary = outputs.add(self.final) if as_cog or self.final.suffix.lower() == ".npy" else None
        self.npy = self.final.suffix.lower() == ".npy"
        if self.npy:
            array = np.lib.format.open_memmap(self.temporary, mode="w+", dtype=dtype,
                                              shape=(grid["height"], grid["width"]))
            self.writer, self.dataset = ArrayWriter(array), None
            return
        self.scratch = outputs.add_scratch(self.final.with_name(f".{self.final.stem}.scratch-{id(self)}.tif"))
        self.dataset = create_scratch(self.scratch, grid, dtype, nodata)
        if colormap:
            self.dataset.write_colormap(1, colormap)
        self.writer = RasterWriter(self.dataset)
        self.as_cog = as_cog

    def close(self) -> None:
        self.writer.close()
        if self.dataset is not None and not self.dataset.closed:
            self.dataset.close()

    def finish(self) -> None:
        """Close; a GeoTIFF becomes a COG at the temporary name."""
        self.close()
        if not self.npy and self.as_cog:
            write_cog(self.scratch, self.temporary, self.dtype)


def create_scratch(path: Path, grid: dict, dtype: str, nodata):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    profile = dict(driver="GTiff", height=grid["height"], width=grid["width"], count=1, dtype=dtype, nodata=nodata,
                   compress="deflate", ZLEVEL=1, BIGTIFF="IF_SAFER", tiled=True, blockxsize=MASK_BLOCK,
                   blockysize=MASK_BLOCK)
    if grid.get("crs") is not None:
        profile["crs"] = grid["crs"]
    if grid.get("transform") is not None:
        profile["transform"] = grid["transform"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path, "w", **profile)
    except rasterio.errors.RasterioIOError as error:
        raise OutputError(f"{path}: cannot write ({error})") from None
    if grid.get("gcps") is not None and grid.get("transform") is None:
        dataset.gcps = grid["gcps"]
    return dataset


class ProbabilitySink:
    """float32 probabilities (NaN at no-data), or uint8 p * PROBABILITY_SCALE for the polygon means."""

    def __init__(self, writer, quantized: bool = False):
        self.writer, self.quantized = writer, quantized

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        if self.quantized:
            values = np.rint(probability * PROBABILITY_SCALE).astype(np.uint8)
            values[invalid] = PROBABILITY_NODATA
        else:
            values = probability.astype(np.float32, copy=True)
            values[invalid] = np.nan
        self.writer.write(row0, values)


class UncertaintySink:
    def __init__(self, writer):
        self.writer = writer

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, uncertainty=None, **extra) -> None:
        values = np.asarray(uncertainty, np.float32).copy()
        values[invalid] = np.nan
        self.writer.write(row0, values)


class Sinks:
    """Hands each finished strip to every sink."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        for sink in self.sinks:
            sink.write(row0, probability, invalid, **extra)


# ---------------------------------------------------------------------------------------------- the run

def map_scene(model: nn.Module, data: dict, inputs: list[Path], outputs: SceneOutputs,
              options: SceneOptions | None = None, *, model_info: dict | None = None,
              warn: Callable[[str], None] = warn_stderr, note: Callable[[str], None] = note_stderr) -> dict:
    """Map one scene (see the module docstring); returns the summary (also written to outputs.summary)."""
    import rasterio
    o = options or SceneOptions()
    started = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    check_options(o)
    bands, raster_bands = resolve_bands(inputs, o, data)
    units = o.units or default_units(data)
    tile = int(o.tile or data.get("image_size", 256))
    overlap = tile // 4 if o.overlap is None else int(o.overlap)
    tile_origins(1, tile, overlap)  # refuses overlap >= tile before any work
    calibration = float(data.get("calibration_db", 0.0))
    preprocessors = [make_preprocess(b, data["normalization"], units, calibration) for b in bands]
    check_distinct(outputs.named(), {**{f"scene ({p.name})": p for p in inputs},
                                     **{f"pre-event ({p.name})": p for p in (o.pre or [])},
                                     "reference water": o.reference_water, "exclusion": o.exclude,
                                     "checkpoint": (model_info or {}).get("checkpoint")})
    flood_wanted = bool(outputs.flood or o.pre or o.reference_water or o.exclude)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024):
        reader, grid, closers, infos = open_scene(inputs, raster_bands)
        try:
            check_output_kinds(outputs, is_georeferenced(grid))
            check_scene_values(inputs, bands, raster_bands, units, data, preprocessors, warn)
            note_bands(inputs, bands, infos, note)
            if outputs.flood and not (o.pre or o.reference_water):
                warn("no --pre or --reference-water: every water pixel is flood (class 1) in the flood raster")
            before, excluded, pre_reader = open_before_layers(o, grid, bands, raster_bands, units, data,
                                                              preprocessors, closers, warn)
            check_tile(model, tile, torch.device(o.device))
            engine = dict(tile=tile, overlap=overlap, batch_size=o.batch_size, device=o.device,
                          progress=o.progress, precision=o.precision, tta=o.tta, fuse=o.fuse)
            with OutputSet() as files:
                result = run_products(model, reader, grid, outputs, o, files, preprocessors, engine, before,
                                      excluded, pre_reader, flood_wanted, inputs, raster_bands[0], closers)
                summary = scene_summary(result, data, model_info, inputs, infos, o, outputs, bands, units, tile,
                                        overlap, started)
                if outputs.summary:
                    write_json(summary, files.add(outputs.summary))
                files.commit()
        finally:
            for close in reversed(closers):
                close()
    return summary


def open_before_layers(o: SceneOptions, grid: dict, bands, raster_bands, units, data, preprocessors, closers,
                       warn) -> tuple[BeforeLayers, object, object]:
    """Readers on the scene's grid: the pre-event scene (bilinear), the reference water and the exclusion
    raster (nearest); their values checked like the scene's."""
    pre_reader = reference = excluded = None
    if o.pre:
        pre_paths = [Path(p) for p in o.pre]
        if len(pre_paths) not in (1, len(bands)):
            raise InferenceError(f"--pre: give one file, or one per band ({len(bands)}), got {len(pre_paths)}")
        readers = []
        for path, wanted in band_groups(pre_paths, raster_bands):
            r, close = aligned_reader(path, grid, reader_band(wanted), "bilinear")
            closers.append(close)
            readers.append(r)
        check_scene_values(pre_paths, bands, raster_bands, units, data, preprocessors, warn)
        pre_reader = stacked(readers)
    if o.reference_water:
        reference, close = aligned_reader(o.reference_water, grid, 1, "nearest")
        closers.append(close)
    if o.exclude:
        excluded, close = aligned_reader(o.exclude, grid, 1, "nearest")
        closers.append(close)
    return BeforeLayers(None, reference, o.reference_threshold, o.threshold), excluded, pre_reader


def run_products(model, reader, grid, outputs: SceneOutputs, o: SceneOptions, files: OutputSet, preprocessors,
                 engine: dict, before: BeforeLayers, excluded, pre_reader, flood_wanted: bool, inputs,
                 first_raster_band: int, closers) -> dict:
    import rasterio
    timings = {}
    if pre_reader is not None:
        # the pre-event scene, mapped with the same model on the post-event grid, into a scratch raster
        started = time.perf_counter()
        pre = RasterProduct(outputs.mask.with_name(f".{outputs.mask.stem}.pre-probability.tif"), files, grid,
                            "float32", float("nan"), as_cog=False)  # a .tif name: a scratch GeoTIFF, never an output
        predict_tiled(model, pre_reader, ProbabilitySink(pre.writer), preprocessors,
                      **{**engine, "progress": o.progress})
        pre.close()
        pre_dataset = rasterio.open(pre.scratch)
        closers.append(pre_dataset.close)
        before.pre = RasterReader(pre_dataset, 1)
        timings["pre_event_s"] = time.perf_counter() - started
    products = []
    mask = RasterProduct(outputs.mask, files, grid, "uint8", NODATA, MASK_COLORMAP)
    products.append(mask)
    probability = None
    if outputs.probability:
        probability = RasterProduct(outputs.probability, files, grid, "float32", float("nan"))
        products.append(probability)
    water_tally = ClassTally(grid, {0: "not_water", 1: "water"})
    sinks = [MaskSink(TallyWriter(mask.writer, water_tally), probability.writer if probability else None, o.threshold)]
    if outputs.uncertainty:
        uncertainty = RasterProduct(outputs.uncertainty, files, grid, "float32", float("nan"))
        products.append(uncertainty)
        sinks.append(UncertaintySink(uncertainty.writer))
    flood = flood_sink = None
    if flood_wanted:
        if outputs.flood:
            flood = RasterProduct(outputs.flood, files, grid, "uint8", NODATA, COLORMAP)
        else:  # classes only for the polygons / summary
            flood = RasterProduct(outputs.mask.with_name(f".{outputs.mask.stem}.classes.tif"), files, grid, "uint8",
                                  NODATA, COLORMAP, as_cog=False)
        products.append(flood)
        flood_sink = FloodSink(flood.writer, grid, before, excluded, o.threshold)
        sinks.append(flood_sink)
    quantized = None
    if outputs.polygons:
        quantized = RasterProduct(outputs.mask.with_name(f".{outputs.mask.stem}.p8.tif"), files, grid, "uint8",
                                  PROBABILITY_NODATA, as_cog=False)
        products.append(quantized)
        sinks.append(ProbabilitySink(quantized.writer, quantized=True))
    started = time.perf_counter()
    stats = predict_tiled(model, reader, Sinks(sinks), preprocessors, uncertainty=bool(outputs.uncertainty),
                          **engine)
    timings["inference_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for product in products:
        product.finish()
    timings["cog_s"] = time.perf_counter() - started
    polygon_report = None
    if outputs.polygons:
        started = time.perf_counter()
        polygon_report = write_scene_polygons(outputs.polygons, files, flood if flood_wanted else mask, quantized,
                                              grid, o, before.any)
        timings["polygons_s"] = time.perf_counter() - started
    if outputs.quicklook:
        write_quicklook(inputs[0], mask.temporary, files.add(outputs.quicklook),
                        preprocessors[0], first_raster_band, image_format="PNG")
    return {"stats": stats, "mask_sink": sinks[0], "water": water_tally.report(),
            "flood": flood_sink.tally.report() if flood_sink else None, "polygons": polygon_report,
            "timings": timings}


class TallyWriter:
    """Counts the rows on their way to `writer`: the water tally takes the mask MaskSink writes, so the
    probabilities are thresholded once."""

    def __init__(self, writer, tally: ClassTally):
        self.writer, self.tally = writer, tally

    def write(self, row0: int, rows: np.ndarray) -> None:
        self.tally.add(row0, rows)
        self.writer.write(row0, rows)

    def close(self) -> None:
        self.writer.close()


def read_whole(product: RasterProduct) -> np.ndarray:
    import rasterio
    if product.npy:
        return np.load(product.temporary, mmap_mode="r")
    with rasterio.open(product.scratch) as dataset:
        return dataset.read(1)


def write_scene_polygons(path: Path, files: OutputSet, classes_product: RasterProduct, quantized: RasterProduct,
                         grid: dict, o: SceneOptions, with_before: bool) -> dict:
    values = {1: "flood", 2: "permanent_or_pre_event_water"} if with_before else {1: "flood" if o.exclude else "water"}
    classes = np.asarray(read_whole(classes_product))
    probability = read_whole(quantized)
    frame, dropped = polygonize(classes, probability, grid, values, o.min_area_m2, o.simplify_m)
    del classes, probability
    write_polygons(frame, files.add(path), path)
    return {"path": str(path), "polygons": len(frame), "dropped_below_min_area": dropped,
            "area_km2": {name: float(frame.area_m2[frame["class"] == value].sum() / 1e6)
                         for value, name in values.items()}}


def scene_summary(result: dict, data: dict, model_info: dict | None, inputs, infos, o: SceneOptions,
                  outputs: SceneOutputs, bands, units, tile, overlap, started: float) -> dict:
    stats, sink = result["stats"], result["mask_sink"]
    megapixels = stats["height"] * stats["width"] / 1e6
    info = dict(model_info or {})
    if info.get("checkpoint") and "checkpoint_sha256" not in info:  # predict.py hashes once for all scenes
        from lib.checkpoint import file_sha256
        info["checkpoint_sha256"] = file_sha256(Path(info["checkpoint"]))
    timings = {**result["timings"], "total_s": time.perf_counter() - started}
    return {**stats, "band": ",".join(bands), "units": units, "tile": tile, "overlap": overlap,
            "batch_size": o.batch_size, "threshold": o.threshold, "tta": o.tta, "fuse": o.fuse,
            "water_fraction": sink.water / max(sink.valid, 1),
            "nodata_pixels": stats["height"] * stats["width"] - sink.valid,
            "megapixels_per_s": megapixels / max(stats["seconds"], 1e-9),
            "output": str(outputs.mask),
            "probability": str(outputs.probability) if outputs.probability else None,
            "quicklook": str(outputs.quicklook) if outputs.quicklook else None,
            "outputs": {k: str(v) for k, v in outputs.named().items() if v is not None},
            "model": {k: str(v) if isinstance(v, Path) else v for k, v in info.items()},
            "inputs": infos,
            "pre_event": [str(p) for p in o.pre] if o.pre else None,
            "reference_water": str(o.reference_water) if o.reference_water else None,
            "reference_threshold": o.reference_threshold,
            "exclude": str(o.exclude) if o.exclude else None,
            "water": result["water"], "flood": result["flood"], "polygons": result["polygons"],
            "timings": timings}


def write_json(data: dict, path: Path) -> None:
    import json
    from lib.checkpoint import plain
    path.write_text(json.dumps(plain(data), indent=2) + "\n")
