"""Opening a raster with rasterio the one way every reader wants: GDAL's "not georeferenced" chatter kept
quiet, and a file it cannot open turned into one error naming the file, in the caller's own words.

Kept light (no torch, rasterio imported on call) so lib.mapping.rasters, lib.data.kompsat5 and lib.prepare can all
share it without pulling each other's imports in.
"""
from __future__ import annotations

import warnings
from pathlib import Path


def open_quietly(path: Path, error: type[Exception], message: str, *,
                 catch: type[Exception] | tuple = Exception, quiet_all: bool = False):
    """The rasterio dataset of `path`, or `error(message)` when rasterio.open raises `catch`.

    message is a str.format template with {path}, {kind} (the exception's class name) and {error}, so each
    caller keeps the exact wording its users and docs already know. quiet_all silences every warning
    while opening, not only NotGeoreferencedWarning (plain, ungeoreferenced rasters are allowed)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Warning if quiet_all else NotGeoreferencedWarning)
            return rasterio.open(path)
    except catch as failure:
        raise error(message.format(path=path, kind=type(failure).__name__, error=failure)) from None


def read_failure(error: BaseException) -> str:
    """Why GDAL could not read pixels, in words: rasterio's "Read failed. See previous exception" carries the
    GDAL message (e.g. "TIFFFillTile: Read error ... got 117365 bytes, expected 235114") in its context."""
    messages, seen = [], error
    while seen is not None:
        text = str(seen).strip().splitlines()[0] if str(seen).strip() else ""
        if text and "See previous exception" not in text:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    detail = messages[-1] if messages else type(error).__name__
    return f"the file is truncated or damaged: {detail}"


# ------------------------------------------------------------------------------------- multi-page TIFFs
# tifffile writes a (bands, H, W) array as one page per band; GDAL shows the first page as the only band and
# the others as subdatasets (GTIFF_DIR:n:path). Where every page is one band of the same size and type, the
# pages are the bands; otherwise only the first page is read and `page_note` says why.

def pages(dataset) -> list[str]:
    """The subdataset names of a multi-page TIFF's pages ([] for a plain one-page raster)."""
    if dataset.count != 1 or dataset.driver != "GTiff":
        return []
    try:
        return [name for name in dataset.subdatasets if name.startswith("GTIFF_DIR:")]
    except Exception:  # a driver without subdatasets
        return []


def page_shapes(names: list[str]) -> list[tuple]:
    """(height, width, dtype, band count) of each page."""
    shapes = []
    for name in names:
        with open_page(name) as page:
            shapes.append((page.height, page.width, page.dtypes[0], page.count))
    return shapes


def open_page(name: str):
    """A page of a multi-page TIFF (later pages carry no georeferencing: quietly)."""
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)
        return rasterio.open(name)


def band_pages(dataset) -> tuple[list[str], str]:
    """(the pages to read as bands, a note): the pages where every page is one band of the first page's size
    and type; else ([], a note saying that only the first page is read and why)."""
    names = pages(dataset)
    if len(names) < 2:
        return [], ""
    shapes = page_shapes(names)
    if all(shape == (dataset.height, dataset.width, dataset.dtypes[0], 1) for shape in shapes):
        return names, ""
    found = ", ".join(f"{h} x {w} {dtype} ({count} band(s))" for h, w, dtype, count in shapes[:4])
    return [], (f"a multi-page TIFF whose {len(names)} pages differ in size or type ({found}); only the first "
                f"page is read")


def read_pages(names: list[str], window=None, indexes=None):
    """(bands, H, W) of the 1-based `indexes` (default all) of the pages `names`, in `window`."""
    import numpy as np
    chosen = [names[i - 1] for i in indexes] if indexes is not None else names
    arrays = []
    for name in chosen:
        with open_page(name) as page:
            arrays.append(page.read(1, window=window))
    return np.stack(arrays)
