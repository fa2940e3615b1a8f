"""The benchmark's whole scene (benchmark.py): a large float32 VV GeoTIFF written by strips, so a scene of
10,000 x 10,000 px never has to fit in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A float32 GeoTIFF of synthetic VV backscatter in dB (speckled land, dark meandering water, a NaN
    no-data corner), written by strips (EPSG:32630, 10 m pixels)."""
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(seed)
    strip = 256
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1, dtype="float32", nodata=float("nan"),
                       crs="EPSG:32630", transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_500_000.0),
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER") as dataset:
        for row0 in range(0, size, strip):
            rows = min(strip, size - row0)
            y = np.arange(row0, row0 + rows, dtype=np.float32)[:, None]
            river = np.abs(y - size / 2 - 0.15 * size * np.sin(x / (0.11 * size + 1))) < 0.02 * size + 3
            lakes = np.sin(x / 97.0) * np.cos(y / 131.0) > 0.8
            water = river | lakes
            vv = np.where(water, -20.0, -9.0).astype(np.float32)
            vv += 10 * np.log10(rng.gamma(4.0, 0.25, size=(rows, size)).astype(np.float32))
            vv[: max(0, min(rows, size // 20 - row0)), : size // 20] = np.nan
            dataset.write(vv, 1, window=rasterio.windows.Window(0, row0, size, rows))
    return path
