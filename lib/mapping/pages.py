"""A multi-page TIFF (one band per page, as tifffile writes a (bands, H, W) array) read as one raster of
those bands: GDAL shows only the first page as a band and the others as subdatasets, so a two-polarisation
file used to be mapped from its first page alone. Which pages qualify: lib.data.raster_io.band_pages
(shared with prepare_data.py)."""
from __future__ import annotations

import numpy as np


class PagedTiff:
    """The pages of a multi-page TIFF as the bands of one rasterio-like dataset: what RasterReader and the
    decimated reads use (count, dtypes, nodatavals, height, width, read), with the first page's georeference
    (later pages carry none)."""

    def __init__(self, first, names: list[str]):
        from lib.data.raster_io import open_page
        self.first, self.pages = first, []
        try:
            for name in names:
                self.pages.append(open_page(name))
        except BaseException:
            self.close()
            raise
        self.name, self.height, self.width = first.name, first.height, first.width
        self.crs, self.transform, self.gcps = first.crs, first.transform, first.gcps
        self.count = len(self.pages)
        self.dtypes = [page.dtypes[0] for page in self.pages]
        self.nodatavals = [page.nodata for page in self.pages]

    def read(self, indexes, window=None, out_shape=None, resampling=None) -> np.ndarray:
        extra = {} if out_shape is None else {"out_shape": out_shape, "resampling": resampling}
        if isinstance(indexes, (int, np.integer)):
            return self.pages[indexes - 1].read(1, window=window, **extra)
        return np.stack([self.pages[i - 1].read(1, window=window, **extra) for i in indexes])

    def close(self) -> None:
        for page in self.pages:
            page.close()
        self.first.close()


def open_bands(dataset, note=None):
    """`dataset` itself, or a PagedTiff of its pages where they are bands of one size and type; a multi-page
    file whose pages differ is read from its first page, and `note` says why."""
    from lib.data.raster_io import band_pages
    names, why = band_pages(dataset)
    if names:
        return PagedTiff(dataset, names)
    if why and note is not None:
        note(f"{dataset.name}: {why}")
    return dataset
