"""What a scene run is asked for (`SceneOptions`, `SceneOutputs`, as predict.py fills them) and what is
resolved from them and the checkpoint once, before any work (`Plan`: units, tile, overlap, preprocessing)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from lib.errors import InferenceError
from lib.mapping import checks
from lib.mapping.rasters import UNITS, default_units, make_preprocess
from lib.mapping.tiling import FUSE, TTA, tile_origins

__all__ = ["FUSE", "TTA", "UNITS", "Plan", "backscatter_band", "SceneOptions", "SceneOutputs", "check_options", "resolve_tile"]


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
    change_db: float | str | None = "auto"  # with pre: "auto", a negative dB threshold, None (off); lib/mapping/change.py
    method: str = "model"                   # model, threshold, ensemble (lib/mapping/methods.py)
    baseline: dict | None = None            # the checkpoint's training-fitted thresholds (threshold's fallback)
    temperature: float | None = None        # of the likelihood (lib/mapping/calibration.py); None: checkpoint's or 1
    dem: Path | None = None                 # elevation raster for the steep-slope flag
    threshold_band: str | None = None       # stacked checkpoint: the band of --method threshold/ensemble and
                                            # the flags; default VH if an input band, else the first (backscatter_band)


@dataclass
class SceneOutputs:
    mask: Path
    probability: Path | None = None
    quicklook: Path | None = None
    flood: Path | None = None
    polygons: Path | None = None
    summary: Path | None = None
    uncertainty: Path | None = None
    # the layers of an operational product (lib/mapping/layers.py)
    observed_water: Path | None = None
    reference_out: Path | None = None
    exclusion_out: Path | None = None
    likelihood: Path | None = None
    flags: Path | None = None
    footprint: Path | None = None
    flood_quicklook: Path | None = None

    def named(self) -> dict[str, Path | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_options(o: SceneOptions) -> None:
    checks.check_range("--batch-size", o.batch_size, 1, integer=True)
    checks.check_range("--threshold", o.threshold, 0.0, 1.0, low_open=True, high_open=True)
    checks.check_range("--tile", o.tile, 1, integer=True)
    checks.check_range("--overlap", o.overlap, 0, integer=True)
    checks.check_range("--reference-threshold", o.reference_threshold)
    if o.change_db not in ("auto", None) and not (isinstance(o.change_db, (int, float)) and o.change_db < 0):
        raise InferenceError(f"--change-db must be auto, off or a negative number of dB, got {o.change_db!r}")
    checks.check_range("--min-area-m2", o.min_area_m2, 0.0)
    checks.check_range("--simplify-m", o.simplify_m, 0.0)
    checks.check_range("--temperature", o.temperature, 0.0, low_open=True)
    if o.tta not in TTA:
        raise InferenceError(f"--tta must be one of {', '.join(TTA)}, got {o.tta!r}")
    if o.fuse not in FUSE:
        raise InferenceError(f"--fuse must be one of {', '.join(FUSE)}, got {o.fuse!r}")
    if o.units is not None and o.units not in UNITS:
        raise InferenceError(f"--units must be one of {', '.join(UNITS)}, got {o.units!r}")


def resolve_tile(o: SceneOptions, data: dict) -> tuple[int, int]:
    """(tile, overlap): the checkpoint's image_size and a quarter of it unless given; overlap < tile."""
    tile = int(o.tile or data.get("image_size", 256))
    overlap = tile // 4 if o.overlap is None else int(o.overlap)
    tile_origins(1, tile, overlap)  # refuses overlap >= tile before any work
    return tile, overlap


@dataclass(frozen=True)
class Plan:
    """How a scene is mapped: the options, and what they resolve to with the checkpoint's data settings."""
    options: SceneOptions
    units: str
    tile: int
    overlap: int
    preprocessors: list[Callable]   # one per band
    temperature: float = 1.0        # of the likelihood: --temperature, the checkpoint's, or 1
    data_range: tuple = (0.0, 1.0)  # the backscatter band's normalization range (dB), for the contrast flag
    stacked: bool = False           # the bands are the model's input channels (checkpoint input_bands)
    backscatter: int = 0            # index of the one band of the threshold, ensemble and flags

    @classmethod
    def resolve(cls, o: SceneOptions, data: dict, bands: list[str]) -> "Plan":
        from lib.data.bands import band_range
        units = o.units or default_units(data)
        tile, overlap = resolve_tile(o, data)
        calibration = float(data.get("calibration_db", 0.0))
        temperature = o.temperature or float((data.get("calibration") or {}).get("temperature", 1.0))
        stacked = bool(data.get("input_bands"))
        index = bands.index(backscatter_band(bands, o.threshold_band)) if stacked else 0
        return cls(o, units, tile, overlap, [make_preprocess(b, data["normalization"], units, calibration)
                                             for b in bands], temperature,
                   tuple(band_range(bands[index], data["normalization"])), stacked, index)

    def engine(self) -> dict:
        """predict_tiled's settings (the tile already checked against the model)."""
        o = self.options
        return dict(tile=self.tile, overlap=self.overlap, batch_size=o.batch_size, device=o.device,
                    progress=o.progress, precision=o.precision, tta=o.tta, fuse=o.fuse, check=False,
                    stacked=self.stacked)


BACKSCATTER_PREFERENCE = "VH"  # the band whose threshold maps best on real chips (docs/flood-mapping.md)


def backscatter_band(bands: list[str], chosen: str | None = None) -> str:
    """The one band of a stacked model's threshold, ensemble and flags: `chosen` (--threshold-band), else VH
    when it is an input band, else the first."""
    if chosen is not None:
        if chosen not in bands:
            raise InferenceError(f"--threshold-band {chosen} is not one of the input bands ({','.join(bands)})")
        return chosen
    return BACKSCATTER_PREFERENCE if BACKSCATTER_PREFERENCE in bands else bands[0]
