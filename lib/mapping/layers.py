"""The layers of an operational flood product (as the Copernicus Global Flood Monitoring product delivers
them with every scene), beside the water mask and the flood classes:

    observed water   uint8  1 water now or before (flood plus reference / pre-event water), 0 not, 255 no-data
    reference        uint8  the reference water mask on the scene's grid: 1 water, 0 not, 255 no-data
    exclusion        uint8  the exclusion mask on the scene's grid: 1 excluded, 0 not, 255 outside its extent
    likelihood       uint8  calibrated water probability in percent, 0-100, 255 no-data
    flags            uint8  advisory bits (lib/mapping/flags.py), 0 none
    footprint        polygon of the valid, not excluded pixels (.gpkg / .geojson)
    flood quick-look PNG of the flood classes

Exclusion applies to every layer (and to the mask, probabilities, uncertainty and the summary): the
`ExclusionGate` hands every sink excluded pixels as no-data. Every GeoTIFF carries tags: PRODUCT, CLASSES
or UNITS, and the provenance (model, checkpoint hash, thresholds, temperature, input files, date).
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from lib.errors import InferenceError
from lib.mapping.calibration import calibrate
from lib.mapping.rasters import NODATA

LAYER_OUTPUTS = ("observed_water", "reference_out", "exclusion_out", "likelihood", "flags")
# what each raster holds, written into its tags (PRODUCT, CLASSES or UNITS)
DESCRIPTIONS = {
    "mask": ("water mask", {"CLASSES": "0=not_water,1=water,255=no_data_or_excluded"}),
    "probability": ("water probability (uncalibrated)", {"UNITS": "probability 0-1, NaN no-data or excluded"}),
    "uncertainty": ("std of the water probability over TTA views and bands",
                    {"UNITS": "probability 0-1, NaN no-data or excluded"}),
    "flood": ("flood classes", {"CLASSES": "0=dry,1=flood,2=permanent_or_pre_event_water,255=no_data"}),
    "observed_water": ("observed water extent (flood plus reference or pre-event water)",
                       {"CLASSES": "0=not_water,1=water,255=no_data_or_excluded"}),
    "reference_out": ("reference water mask on the scene grid",
                      {"CLASSES": "0=not_water,1=reference_water,255=no_data_or_excluded"}),
    "exclusion_out": ("exclusion mask on the scene grid", {"CLASSES": "0=not_excluded,1=excluded,255=no_data"}),
    "likelihood": ("calibrated water likelihood", {"UNITS": "percent 0-100, 255 no-data or excluded"}),
    "flags": ("advisory flags", {"CLASSES": "bits: 1=no_data,2=low_backscatter_contrast,4=steep_slope,"
                                            "8=excluded; 0=none"}),
}
OBSERVED_COLORMAP = {0: (245, 245, 235, 255), 1: (30, 90, 200, 255), NODATA: (0, 0, 0, 0)}


def check_uncertainty(outputs, tta: str, bands: list[str], stacked: bool = False) -> None:
    """The std needs a spread: several TTA views or several fused bands; one view of one band (or of a
    stacked model's bands: one probability) has none."""
    if outputs.uncertainty is None or tta != "none":
        return
    if stacked:
        raise InferenceError(f"{outputs.uncertainty}: --uncertainty is the std over TTA views; a model of stacked "
                             f"bands ({','.join(bands)}) gives one probability, so without --tta there is no "
                             f"spread: add --tta flip or d4")
    if len(bands) < 2:
        raise InferenceError(f"{outputs.uncertainty}: --uncertainty is the std over TTA views and bands; with one "
                             f"band and no --tta there is no spread (it would be 0 everywhere): add --tta flip "
                             f"or d4, or a second band")


def check_layer_inputs(outputs, options, georeferenced: bool) -> None:
    """The layers' inputs are given, their outputs have the right kind."""
    if outputs.footprint is not None:
        from lib.mapping.vector import vector_driver
        vector_driver(outputs.footprint)
        if not georeferenced:
            raise InferenceError(f"{outputs.footprint}: the footprint needs a georeferenced input")
    if outputs.flags is None and options.dem is not None:
        raise InferenceError(f"{options.dem}: --dem is read for the steep-slope bit of --flags; give --flags too")
    if outputs.reference_out is not None and options.reference_water is None:
        raise InferenceError(f"{outputs.reference_out}: --reference-out needs --reference-water")
    if outputs.exclusion_out is not None and options.exclude is None:
        raise InferenceError(f"{outputs.exclusion_out}: --exclusion-out needs --exclude")
    for name in (*LAYER_OUTPUTS,):
        path = getattr(outputs, name)
        if path is not None and path.suffix.lower() not in (".tif", ".tiff"):
            raise InferenceError(f"{path}: the --{name.replace('_', '-')} layer is written as a GeoTIFF (.tif)")


def provenance_tags(model_info: dict | None, options, inputs: list[Path], temperature: float) -> dict:
    """The tags every raster of a run carries: what made it, from what, when."""
    info = model_info or {}
    tags = {"SOFTWARE": "predict.py", "CREATED_UTC": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "MODEL": str(info.get("name", "")), "CHECKPOINT": str(info.get("checkpoint", "")),
        "CHECKPOINT_SHA256": str(info.get("checkpoint_sha256", "")), "THRESHOLD": str(options.threshold),
        "LIKELIHOOD_TEMPERATURE": str(temperature), "INPUTS": ",".join(map(str, inputs)),
        "TTA": options.tta, "FUSE": options.fuse}
    optional = {"PRE_EVENT": ",".join(map(str, options.pre or [])) or None, "REFERENCE_WATER": options.reference_water,
                "REFERENCE_THRESHOLD": options.reference_threshold, "EXCLUDE": options.exclude,
                "DEM": getattr(options, "dem", None)}
    tags.update({k: str(v) for k, v in optional.items() if v is not None})
    return tags


def tag_product(product, name: str, tags: dict | None) -> None:
    """Write PRODUCT, CLASSES/UNITS and the provenance into a raster product's scratch GeoTIFF (the COG copy
    keeps them); .npy outputs have no tags."""
    if tags is None or product.dataset is None or product.dataset.closed:
        return
    description, kind = DESCRIPTIONS.get(name, (name, {}))
    product.dataset.update_tags(PRODUCT=description, **kind, **tags)
    product.dataset.set_band_description(1, description)


class ExclusionGate:
    """Hands every sink excluded pixels as no-data (`invalid`), and the input's own no-data and the
    exclusion apart (`input_invalid`, `excluded`) for the flags. `excluded`: a reader, non-zero = excluded."""

    def __init__(self, sinks, excluded=None):
        self.sinks, self.excluded = sinks, excluded

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        excluded = np.zeros_like(invalid)
        if self.excluded is not None:
            values = self.excluded.read(row0, row0 + len(probability))
            excluded = np.isfinite(values) & (values != 0)
        self.sinks.write(row0, probability, invalid | excluded, input_invalid=invalid, excluded=excluded, **extra)


def observed_water(water: np.ndarray, invalid: np.ndarray, before_water: np.ndarray | None) -> np.ndarray:
    """1 water now or before (reference / pre-event), 0 not, 255 no-data: the observed flood plus the
    water that was there before."""
    values = water.astype(np.uint8)
    if before_water is not None:
        values[before_water] = 1
    values[invalid] = NODATA
    return values


def binary_layer(values: np.ndarray, is_set: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """uint8 1 where is_set, 0 elsewhere, 255 where nodata or the raster has no value (NaN)."""
    layer = is_set.astype(np.uint8)
    layer[nodata | ~np.isfinite(values)] = NODATA
    return layer


def likelihood_percent(probability: np.ndarray, invalid: np.ndarray, temperature: float) -> np.ndarray:
    """uint8 calibrated probability in percent (0-100), 255 no-data."""
    values = np.rint(100.0 * calibrate(probability, temperature)).astype(np.uint8)
    values[invalid] = NODATA
    return values


class LayerSink:
    """Writes the layers asked for (writers by name: observed_water, reference_out, exclusion_out,
    likelihood, flags) from each finished strip; `before` and the reference / exclusion readers are on
    the scene's grid (lib/mapping/flood.py BeforeLayers, lib/mapping/rasters.py open_aligned)."""

    def __init__(self, writers: dict, before, reference=None, excluded=None, threshold: float = 0.5,
                 temperature: float = 1.0, flags=None):
        self.writers, self.before, self.reference, self.excluded = writers, before, reference, excluded
        self.threshold, self.temperature, self.flags = threshold, temperature, flags

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, input_invalid=None, excluded=None,
              **extra) -> None:
        row1 = row0 + len(probability)
        excluded = np.zeros_like(invalid) if excluded is None else excluded
        water = (probability >= self.threshold) & ~invalid
        if "observed_water" in self.writers:
            before_water = self.before.read(row0, row1)[0] if self.before.any else None
            self.writers["observed_water"].write(row0, observed_water(water, invalid, before_water))
        if "reference_out" in self.writers:
            values = self.reference.read(row0, row1)
            wet = self.before.reference_water(np.nan_to_num(values, nan=0.0))
            self.writers["reference_out"].write(row0, binary_layer(values, wet, excluded))
        if "exclusion_out" in self.writers:
            values = self.excluded.read(row0, row1)
            self.writers["exclusion_out"].write(row0, binary_layer(values, excluded, np.zeros_like(excluded)))
        if "likelihood" in self.writers:
            self.writers["likelihood"].write(row0, likelihood_percent(probability, invalid, self.temperature))
        if self.flags is not None:
            self.flags.add(row0, water, input_invalid if input_invalid is not None else invalid, excluded,
                           extra["images"][self.flags.band])

    def close(self) -> None:
        for writer in [*self.writers.values(), *([self.flags] if self.flags is not None else [])]:
            writer.close()


def write_flood_quicklook(classes_path: Path, png_path: Path, max_side: int) -> Path:
    """PNG of the flood classes in their colours (dry pale, flood red, water before blue, no-data
    transparent), decimated by nearest neighbour to at most max_side."""
    from PIL import Image
    from lib.mapping.flood import COLORMAP
    from lib.mapping.rasters import read_decimated
    classes = np.nan_to_num(read_decimated(classes_path, max_side), nan=NODATA).astype(np.uint8)
    palette = np.zeros((256, 4), np.uint8)
    for value, colour in COLORMAP.items():
        palette[value] = colour
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(palette[classes]).save(png_path, format="PNG")
    return png_path


def write_footprint(mask: np.ndarray, grid: dict, path: Path, final_path: Path) -> dict:
    """The footprint of the valid, not excluded pixels (mask != 255) as one (multi)polygon with its area."""
    import geopandas as gpd
    import shapely
    from lib.mapping.vector import polygonize, vector_driver
    valid = (np.asarray(mask) != NODATA).astype(np.uint8)
    frame, _ = polygonize(valid, np.zeros_like(valid), grid, {1: "valid_data"})
    geometry = shapely.multipolygons(list(frame.geometry)) if len(frame) else shapely.MultiPolygon()
    footprint = gpd.GeoDataFrame({"area_m2": [float(frame.area_m2.sum())], "valid_pixels": [int(valid.sum())]},
                                 geometry=gpd.GeoSeries([geometry], crs=grid["crs"]), crs=grid["crs"])
    driver = vector_driver(final_path)
    if driver == "GeoJSON":
        footprint = footprint.to_crs("EPSG:4326")
    footprint.to_file(path, driver=driver, engine="pyogrio", layer=Path(final_path).stem,
                      geometry_type="MultiPolygon")
    return {"path": str(final_path), "area_km2": float(frame.area_m2.sum()) / 1e6, "valid_pixels": int(valid.sum())}
