"""A synthetic pre-/post-event scene pair for trying the flood products (docs/flood-mapping.md) and
measuring them at any size: two-band (VV, VH) float32 dB GeoTIFFs in UTM (EPSG:32630, 10 m pixels),
written strip by strip, so a 10,000 x 10,000 pair needs little memory.

    python -m lib.synthetic.flood_pair /tmp/flood_demo 2000      # pre.tif, post.tif, truth.tif (0 dry, 1 flood, 2 water)

Both scenes show a meandering river and a few lakes; in the post-event scene the river has burst its
banks (a band around it is flooded) and low fields are under water. The pre-event scene is on a grid
shifted by half a pixel (as two acquisitions are), so predict.py reprojects it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

STRIP = 256
CRS = "EPSG:32630"
LAND_DB = {"VV": -9.0, "VH": -16.0}
WATER_DB = {"VV": -21.0, "VH": -27.0}


def water_rows(row0: int, rows: int, size: int, flooded: bool) -> np.ndarray:
    x = np.arange(size, dtype=np.float32)
    y = np.arange(row0, row0 + rows, dtype=np.float32)[:, None]
    centre = size / 2 + 0.15 * size * np.sin(x / (0.11 * size + 1))
    width = 0.015 * size + 3
    distance = np.abs(y - centre)
    lakes = np.sin(x / (0.05 * size + 7)) * np.cos(y / (0.07 * size + 11)) > 0.85
    if not flooded:
        return (distance < width) | lakes
    fields = np.sin(x / (0.03 * size + 5) + 1.0) * np.sin(y / (0.04 * size + 3)) > 0.75
    return (distance < 3 * width) | lakes | (fields & (distance < 0.2 * size))


def write_scene(path: Path, size: int, flooded: bool, seed: int, shift: float = 0.0) -> Path:
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(seed)
    transform = Affine(10.0, 0.0, 500_000.0 + shift, 0.0, -10.0, 4_500_000.0 - shift)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=2, dtype="float32",
                       nodata=float("nan"), crs=CRS, transform=transform, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", BIGTIFF="IF_SAFER") as dataset:
        dataset.descriptions = ("VV", "VH")
        for row0 in range(0, size, STRIP):
            rows = min(STRIP, size - row0)
            water = water_rows(row0, rows, size, flooded)
            for index, band in enumerate(("VV", "VH"), 1):
                db = np.where(water, WATER_DB[band], LAND_DB[band]).astype(np.float32)
                db += 10 * np.log10(rng.gamma(4.0, 0.25, size=(rows, size)).astype(np.float32))  # 4-look speckle
                dataset.write(db, index, window=rasterio.windows.Window(0, row0, size, rows))
    return path


def write_truth(path: Path, size: int) -> Path:
    """0 dry, 1 flood, 2 water before and after, on the post-event grid."""
    import rasterio
    from affine import Affine
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1, dtype="uint8", crs=CRS,
                       transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_500_000.0), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dataset:
        for row0 in range(0, size, STRIP):
            rows = min(STRIP, size - row0)
            before, after = water_rows(row0, rows, size, False), water_rows(row0, rows, size, True)
            classes = np.where(after, np.where(before, 2, 1), 0).astype(np.uint8)
            dataset.write(classes, 1, window=rasterio.windows.Window(0, row0, size, rows))
    return path


def write_flood_pair(folder: Path, size: int = 2000, seed: int = 0) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"pre": write_scene(folder / "pre.tif", size, False, seed, shift=5.0),
            "post": write_scene(folder / "post.tif", size, True, seed + 1),
            "truth": write_truth(folder / "truth.tif", size)}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "flood_demo")
    side = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    print(", ".join(str(p) for p in write_flood_pair(out, side).values()))
