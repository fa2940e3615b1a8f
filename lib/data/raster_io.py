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
