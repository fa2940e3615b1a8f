"""Cloud-Optimized GeoTIFFs: a scratch GeoTIFF written strip by strip is copied by GDAL's COG driver
(internal 256 px tiles, overviews, deflate), which reads and writes by blocks, so memory stays bounded."""
from __future__ import annotations

from pathlib import Path

COG_BLOCK = 256
# overviews of classes keep classes (nearest); of probabilities and std, their average
OVERVIEW_RESAMPLING = {"uint8": "NEAREST", "float32": "AVERAGE"}


def write_cog(scratch: Path, destination: Path, dtype: str) -> Path:
    """Copy the GeoTIFF `scratch` to `destination` as a COG (colour table, nodata and georeference kept)."""
    import rasterio
    import rasterio.shutil
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rasterio.shutil.copy(str(scratch), str(destination), driver="COG", COMPRESS="DEFLATE",
                             BLOCKSIZE=COG_BLOCK, OVERVIEW_RESAMPLING=OVERVIEW_RESAMPLING.get(dtype, "NEAREST"),
                             BIGTIFF="IF_SAFER", NUM_THREADS="2")
    return destination
