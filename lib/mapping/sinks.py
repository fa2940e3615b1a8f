"""Sinks: what finished rows of blended probability become (lib/mapping/tiling.py hands them over top to
bottom). Each writes to a writer (lib/mapping/rasters.py: ArrayWriter, RasterWriter).

    MaskSink         the uint8 mask (1 water, 0 not water, 255 no-data) and optionally float32 probabilities
    ProbabilitySink  float32 probabilities, or uint8 p * PROBABILITY_SCALE for the polygons' means
    UncertaintySink  the std over TTA views and bands
    FloodSink        flood classes against the layers of before (lib/mapping/flood.py), with their areas
    Sinks            every sink of a run, in turn
    TallyWriter      counts classes on their way to a writer
"""
from __future__ import annotations

import numpy as np

from lib.mapping.change import WATER_NO_CHANGE
from lib.mapping.flood import CLASS_NAMES, DRY, FLOOD, BeforeLayers, ClassTally, flood_classes
from lib.mapping.rasters import NODATA
from lib.mapping.vector import PROBABILITY_NODATA, PROBABILITY_SCALE


class MaskSink:
    """Thresholds probabilities into the uint8 mask (1 water, 0 not water, 255 no-data) and, with
    `probability` given, writes the float32 probabilities too (NaN where the input has no data)."""

    def __init__(self, mask, probability=None, threshold: float = 0.5):
        self.mask, self.probability, self.threshold = mask, probability, threshold
        self.water = self.valid = 0

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        mask = (probability >= self.threshold).astype(np.uint8)
        mask[invalid] = NODATA
        self.water += int((mask == 1).sum())
        self.valid += int(mask.size - invalid.sum())
        self.mask.write(row0, mask)
        if self.probability is not None:
            probability = probability.astype(np.float32, copy=True)
            probability[invalid] = np.nan
            self.probability.write(row0, probability)

    def close(self) -> None:
        self.mask.close()
        if self.probability is not None:
            self.probability.close()


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


class FloodSink:
    """Turns finished rows of post-event probability into flood classes (written to `writer`) and tallies
    the class areas. `excluded`: a reader on the grid, non-zero = excluded."""

    def __init__(self, writer, grid: dict, before: BeforeLayers, excluded=None, threshold: float = 0.5,
                 change=None):
        self.writer, self.before, self.excluded, self.threshold = writer, before, excluded, threshold
        self.change = change  # lib.mapping.change.ChangeTest: flood also needs a decrease in backscatter
        names = CLASS_NAMES if before.any else {DRY: "dry", FLOOD: "flood"}
        self.tally = ClassTally(grid, {**names, WATER_NO_CHANGE: "water_no_change"} if change else names)

    def write(self, row0: int, probability: np.ndarray, invalid: np.ndarray, **extra) -> None:
        row1 = row0 + len(probability)
        water = probability >= self.threshold
        before_water = before_known = None
        if self.before.any:
            before_water, before_known = self.before.read(row0, row1)
        excluded = None
        if self.excluded is not None:
            values = self.excluded.read(row0, row1)
            excluded = np.isfinite(values) & (values != 0)
        classes = flood_classes(water, invalid, before_water, before_known, excluded)
        if self.change is not None:
            pre = self.before.values(row0, row1).get("pre")
            classes = self.change.apply(row0, classes, probability, pre, post=extra.get("raw"))
        self.tally.add(row0, classes)
        self.writer.write(row0, classes)

    def close(self) -> None:
        self.writer.close()


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
