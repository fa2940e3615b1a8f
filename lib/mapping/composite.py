"""Maximum flood extent over several dated scenes of one area (composite.py), from predict.py's flood
rasters (classes 0 dry, 1 flood, 2 permanent or pre-event water, 255 no-data), each read on the first
one's grid (nearest; any CRS or resolution):

    extent      uint8  1 flood on any date; 2 water before on some date and never flood; 0 dry on every
                       date that saw the pixel; 255 no date saw it
    first date  int32  date of first flooding as YYYYMMDD (the earliest date with class 1), 0 never flooded

Read and written by strips of rows, so memory is bounded by the strip, whatever the number of dates.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from lib.errors import InferenceError
from lib.mapping.cog import write_cog
from lib.mapping.flood import BEFORE_WATER, DRY, FLOOD, NODATA
from lib.mapping.outputs import OutputSet, check_distinct
from lib.mapping.rasters import RasterWriter, create_scratch, open_aligned, open_input

STRIP_ROWS = 512
NEVER = 0                      # first-date value of pixels never flooded
EXTENT_CLASSES = "0=dry,1=flood_on_any_date,2=water_before_never_flood,255=never_observed"
DATE_IN_NAME = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def parse_dated(text: str) -> tuple[Path, datetime.date]:
    """PATH@YYYY-MM-DD, or a path whose name holds the date (YYYYMMDD or YYYY-MM-DD)."""
    path, at, when = text.rpartition("@")
    path, source = (Path(path), when) if at else (Path(text), Path(text).name)
    found = DATE_IN_NAME.search(source)
    try:
        if found is None:
            raise ValueError
        return path, datetime.date(*map(int, found.groups()))
    except ValueError:
        raise InferenceError(f"{text}: give each flood raster as PATH@YYYY-MM-DD (or with the date in its "
                             f"name, YYYYMMDD)") from None


def combine(classes: list[np.ndarray], dates: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(extent classes, first flood date YYYYMMDD) of rows of flood classes of several dates (float, NaN
    where a date has no value), `dates` in the same order."""
    extent = np.full(classes[0].shape, NODATA, np.uint8)
    first = np.full(classes[0].shape, NEVER, np.int32)
    for values, date in sorted(zip(classes, dates), key=lambda pair: pair[1]):
        seen = np.isfinite(values) & (values != NODATA)
        extent[seen & (extent == NODATA)] = DRY
        extent[(values == BEFORE_WATER) & (extent == DRY)] = BEFORE_WATER
        flooded = values == FLOOD
        first[flooded & (first == NEVER)] = date
        extent[flooded] = FLOOD
    return extent, first


def write_composite(dated: list[tuple[Path, datetime.date]], extent_path: Path, first_path: Path | None) -> dict:
    """Write the extent (and first-date) COGs on the grid of the first raster; returns the class counts."""
    if len(dated) < 2:
        raise InferenceError("a composite needs flood rasters of at least two dates")
    check_distinct({"extent": extent_path, "first date": first_path}, {f"flood ({p.name})": p for p, _ in dated})
    base = open_input(dated[0][0])
    grid = base.grid
    files = [base] + [open_aligned(path, grid, 1, "nearest") for path, _ in dated[1:]]
    dates = [int(when.strftime("%Y%m%d")) for _, when in dated]
    counts = {FLOOD: 0, BEFORE_WATER: 0, DRY: 0, NODATA: 0}
    tags = {"INPUTS": ",".join(str(p) for p, _ in dated), "DATES": ",".join(map(str, dates)),
            "SOFTWARE": "composite.py"}
    try:
        with OutputSet() as outputs:
            products = [("extent", extent_path, "uint8", NODATA, {"CLASSES": EXTENT_CLASSES})]
            if first_path is not None:
                products.append(("first", first_path, "int32", NEVER,
                                 {"UNITS": "date of first flooding YYYYMMDD, 0 never flooded"}))
            opened = []
            for name, path, dtype, nodata, kind in products:
                scratch = outputs.add_scratch(path.with_name(f".{path.stem}.scratch.tif"))
                dataset = create_scratch(scratch, grid, dtype, nodata)
                dataset.update_tags(PRODUCT=f"maximum flood extent: {name}", **kind, **tags)
                opened.append((dataset, RasterWriter(dataset), scratch, outputs.add(path), dtype))
            for row0 in range(0, grid["height"], STRIP_ROWS):
                row1 = min(row0 + STRIP_ROWS, grid["height"])
                rows = [np.asarray(f.reader.read(row0, row1), np.float32) for f in files]
                rows[0][rows[0] == NODATA] = np.nan
                extent, first = combine(rows, dates)
                for value in counts:
                    counts[value] += int((extent == value).sum())
                for (_, writer, *_), array in zip(opened, (extent, first)):
                    writer.write(row0, array)
            for dataset, writer, scratch, temporary, dtype in opened:
                writer.close()
                dataset.close()
                write_cog(scratch, temporary, dtype)
            outputs.commit()
    finally:
        for f in files:
            f.close()
    return {"dates": dates, "pixels": {"flood": counts[FLOOD], "water_before": counts[BEFORE_WATER],
                                       "dry": counts[DRY], "never_observed": counts[NODATA]}}
