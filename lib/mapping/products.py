"""The products of one scene, written under temporary names (lib/mapping/outputs.py): the water mask,
probabilities, uncertainty and flood classes as COGs, the polygons, the quick-look. A pre-event scene is
mapped first, on the post-event grid, into a scratch probability raster that the post-event pass reads
row by row; then one pass of the model over the scene feeds every sink."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.mapping.cog import write_cog
from lib.mapping.flags import FlagsWriter
from lib.mapping.flood import COLORMAP, MASK_COLORMAP, BeforeLayers, ClassTally
from lib.mapping.layers import (LAYER_OUTPUTS, OBSERVED_COLORMAP, ExclusionGate, LayerSink, tag_product,
                                write_flood_quicklook, write_footprint)
from lib.mapping.options import Plan, SceneOutputs
from lib.mapping.outputs import OutputSet
from lib.mapping.rasters import NODATA, ArrayWriter, RasterReader, RasterWriter, create_scratch, read_decimated
from lib.mapping.sinks import FloodSink, MaskSink, ProbabilitySink, Sinks, TallyWriter, UncertaintySink
from lib.mapping.tiling import predict_tiled
from lib.mapping.vector import PROBABILITY_NODATA, polygonize, write_polygons

QUICKLOOK_SIDE = 1024             # long side of the quick-look PNG, at most


@dataclass
class Layers:
    """What the flood classes compare against, read on the scene's grid: the layers of before (the
    pre-event probability is filled in by its own pass), the exclusion raster, the pre-event scene."""
    before: BeforeLayers
    excluded: object = None      # a reader, non-zero = excluded
    pre_reader: object = None    # the pre-event scene's reader, mapped first
    change: object = None        # lib.mapping.change.ChangeTest, with --pre unless --change-db off
    change_record: dict | None = None  # the change test's threshold and fit, for the summary
    dem: object = None           # a reader of elevations, for the steep-slope flag

    def flood_wanted(self, outputs: SceneOutputs) -> bool:
        return bool(outputs.flood or outputs.flood_quicklook or self.pre_reader is not None or self.before.reference is not None
                    or self.excluded is not None)


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
        scratch = f".{self.final.stem}.scratch-{os.getpid()}-{id(self)}.tif"  # the pid: --resume-batch cleans up
        self.scratch = outputs.add_scratch(self.final.with_name(scratch))
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

    def read_whole(self) -> np.ndarray:
        import rasterio
        if self.npy:
            return np.load(self.temporary, mmap_mode="r")
        with rasterio.open(self.scratch) as dataset:
            return dataset.read(1)


def hidden(outputs: SceneOutputs, name: str) -> Path:
    """A working file beside the mask (a .tif name: a scratch GeoTIFF, never an output)."""
    return outputs.mask.with_name(f".{outputs.mask.stem}.{name}.tif")


def map_pre_event(model, scene, layers: Layers, plan: Plan, outputs: SceneOutputs, files: OutputSet) -> float:
    """The pre-event scene's probabilities on the post-event grid, into a scratch raster that the layers of
    before then read; returns the seconds it took."""
    import rasterio
    started = time.perf_counter()
    pre = RasterProduct(hidden(outputs, "pre-probability"), files, scene.grid, "float32", float("nan"), as_cog=False)
    predict_tiled(model, layers.pre_reader, ProbabilitySink(pre.writer), plan.preprocessors, **plan.engine())
    pre.close()
    pre_dataset = rasterio.open(pre.scratch)
    scene.closers.append(pre_dataset.close)
    layers.before.pre = RasterReader(pre_dataset, 1)
    return time.perf_counter() - started


def open_products(scene, layers: Layers, plan: Plan, outputs: SceneOutputs, files: OutputSet) -> dict:
    """Every raster product of the run and the sinks that fill them: {name: RasterProduct}, sinks,
    the water tally and the flood sink (None without flood classes)."""
    grid, threshold = scene.grid, plan.options.threshold
    products = {"mask": RasterProduct(outputs.mask, files, grid, "uint8", NODATA, MASK_COLORMAP)}
    if outputs.probability:
        products["probability"] = RasterProduct(outputs.probability, files, grid, "float32", float("nan"))
    water_tally = ClassTally(grid, {0: "not_water", 1: "water"})
    probability = products.get("probability")
    sinks = [MaskSink(TallyWriter(products["mask"].writer, water_tally), probability and probability.writer,
                      threshold)]
    if outputs.uncertainty:
        products["uncertainty"] = RasterProduct(outputs.uncertainty, files, grid, "float32", float("nan"))
        sinks.append(UncertaintySink(products["uncertainty"].writer))
    flood_sink = None
    if layers.flood_wanted(outputs):
        if outputs.flood:
            products["flood"] = RasterProduct(outputs.flood, files, grid, "uint8", NODATA, COLORMAP)
        else:  # classes only for the polygons / summary
            products["flood"] = RasterProduct(hidden(outputs, "classes"), files, grid, "uint8", NODATA, COLORMAP,
                                              as_cog=False)
        flood_sink = FloodSink(products["flood"].writer, grid, layers.before, layers.excluded, threshold,
                               layers.change)
        sinks.append(flood_sink)
    if outputs.polygons:
        products["quantized"] = RasterProduct(hidden(outputs, "p8"), files, grid, "uint8", PROBABILITY_NODATA,
                                              as_cog=False)
        sinks.append(ProbabilitySink(products["quantized"].writer, quantized=True))
    layer_sink = open_layer_sink(scene, layers, plan, outputs, files, products)
    if layer_sink is not None:
        sinks.append(layer_sink)
    return {"products": products, "sinks": sinks, "water": water_tally, "flood": flood_sink}


def open_layer_sink(scene, layers: Layers, plan: Plan, outputs: SceneOutputs, files: OutputSet,
                    products: dict) -> LayerSink | None:
    """The layers of lib/mapping/layers.py asked for: their products join `products`, one sink fills them."""
    grid, o = scene.grid, plan.options
    wanted = [name for name in LAYER_OUTPUTS if getattr(outputs, name) is not None]
    if not wanted:
        return None
    for name in wanted:
        products[name] = RasterProduct(getattr(outputs, name), files, grid, "uint8", NODATA,
                                       OBSERVED_COLORMAP if name == "observed_water" else None)
    flags = None
    if "flags" in wanted:
        low, high = plan.data_range
        flags = FlagsWriter(products["flags"].writer, high - low, grid, layers.dem, band=plan.backscatter)
        products["flags"].writer = flags  # the product's finish() closes it: the last part block is written
    writers = {name: products[name].writer for name in wanted if name != "flags"}
    return LayerSink(writers, layers.before, layers.before.reference, layers.excluded, o.threshold,
                     plan.temperature, flags)


def write_products(model, scene, layers: Layers, plan: Plan, outputs: SceneOutputs, files: OutputSet,
                   tags: dict | None = None) -> dict:
    """Map the scene into every product (each GeoTIFF tagged with `tags`, lib/mapping/layers.py); returns
    the engine's stats, the mask sink, the tallies' reports, the polygons' and footprint's reports and the
    timings."""
    timings = {}
    if layers.pre_reader is not None:
        timings["pre_event_s"] = map_pre_event(model, scene, layers, plan, outputs, files)
    opened = open_products(scene, layers, plan, outputs, files)
    products = opened["products"]
    started = time.perf_counter()
    stats = predict_tiled(model, scene.reader, ExclusionGate(Sinks(opened["sinks"]), layers.excluded),
                          plan.preprocessors, uncertainty=bool(outputs.uncertainty),
                          hand_rows=layers.change is not None or outputs.flags is not None, **plan.engine())
    timings["inference_s"] = time.perf_counter() - started  # the whole pass; its stages in "stages_s"
    timings["stages_s"] = stats.pop("stages_s")
    started = time.perf_counter()
    for name, product in products.items():
        tag_product(product, name, tags)
        product.finish()
    timings["cog_s"] = time.perf_counter() - started
    polygon_report = None
    if outputs.polygons:
        started = time.perf_counter()
        polygon_report = write_scene_polygons(outputs.polygons, files, products.get("flood", products["mask"]),
                                              products["quantized"], scene.grid, plan, layers.before.any)
        timings["polygons_s"] = time.perf_counter() - started
    if outputs.quicklook:
        write_quicklook(scene.files[0], products["mask"].temporary, files.add(outputs.quicklook),
                        plan.preprocessors[0], scene.raster_bands[0], image_format="PNG")
    if outputs.flood_quicklook:
        write_flood_quicklook(products["flood"].temporary or products["flood"].scratch, files.add(outputs.flood_quicklook), QUICKLOOK_SIDE)
    footprint = None
    if outputs.footprint:
        footprint = write_footprint(products["mask"].read_whole(), scene.grid, files.add(outputs.footprint),
                                    outputs.footprint)
    flood_sink = opened["flood"]
    return {"stats": stats, "mask_sink": opened["sinks"][0], "water": opened["water"].report(),
            "flood": flood_sink.tally.report() if flood_sink else None, "polygons": polygon_report,
            "footprint": footprint, "timings": timings}


def write_scene_polygons(path: Path, files: OutputSet, classes_product: RasterProduct, quantized: RasterProduct,
                         grid: dict, plan: Plan, with_before: bool) -> dict:
    o = plan.options
    values = {1: "flood", 2: "permanent_or_pre_event_water"} if with_before else {1: "flood" if o.exclude else "water"}
    classes = np.asarray(classes_product.read_whole())
    probability = quantized.read_whole()
    frame, dropped = polygonize(classes, probability, grid, values, o.min_area_m2, o.simplify_m)
    del classes, probability
    write_polygons(frame, files.add(path), path)
    return {"path": str(path), "polygons": len(frame), "dropped_below_min_area": dropped,
            "area_km2": {name: float(frame.area_m2[frame["class"] == value].sum() / 1e6)
                         for value, name in values.items()}}


def write_quicklook(scene_file, mask_path: Path, png_path: Path, preprocess, raster_band: int = 1,
                    max_side: int = QUICKLOOK_SIDE, image_format: str | None = None) -> Path:
    """PNG of the (normalized, gray) input with water in blue and no-data in dark red over it; the input
    is read from the scene's open file (lib.mapping.rasters.InputFile), decimated."""
    from PIL import Image
    image, invalid = preprocess(scene_file.decimated(max_side, raster_band))
    mask = read_decimated(mask_path, max_side)
    h, w = min(image.shape[0], mask.shape[0]), min(image.shape[1], mask.shape[1])
    image, invalid, mask = image[:h, :w], invalid[:h, :w], mask[:h, :w]
    gray = np.repeat((image * 255.0)[..., None], 3, axis=2)
    water = mask == 1
    gray[water] = 0.45 * gray[water] + 0.55 * np.array([30.0, 110.0, 255.0])
    gray[(mask == NODATA) | invalid] = np.array([110.0, 20.0, 20.0])
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).save(png_path, format=image_format)
    return png_path
