"""A figure of a few demo patches (make_demo_data.py --figure): VV, VH, RGB, NDWI and the label."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.synthetic.demo import NODATA, PATCH_PREFIX


def _figure_split(root: Path) -> Path:
    for candidate in (root / "train", root / "fold_1" / "train"):
        if (candidate / "img").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no train/ or fold_1/train/ folder with demo patches")


def _pick_figure_patches(split: Path, ids: list[str], n: int) -> tuple[list[str], dict]:
    """Up to n patches with a moderate amount of water, preferring ones that show bright water,
    dark land (shadow, roads, tarmac) and clouds; the rest in id order."""
    stats = {}
    for pid in ids:
        lab = np.load(split / "lab" / f"{pid}.npy")
        vv = np.load(split / "img" / f"{pid}_VV.npy")
        b2 = np.load(split / "img" / f"{pid}_B2.npy")
        water, land = lab == 1, lab == 0
        stats[pid] = {"water": float(water.mean()),
                      "bright_water": float((water & (vv > -12)).sum() / max(water.sum(), 1)),
                      "dark_land": float((land & (vv < -20)).sum() / max(land.sum(), 1)),
                      "cloud": float((b2 > 0.25).mean())}
    wet = [pid for pid in ids if 0.1 <= stats[pid]["water"] <= 0.6]
    chosen: list[str] = []
    for key in ("bright_water", "dark_land", "cloud"):
        pool = [pid for pid in wet if pid not in chosen]
        if pool and len(chosen) < n:
            chosen.append(max(pool, key=lambda pid: stats[pid][key]))
    chosen += [pid for pid in wet + ids if pid not in chosen][:max(0, n - len(chosen))]
    return sorted(dict.fromkeys(chosen))[:n], stats


def render_demo_figure(root, out_png, n: int = 4, dpi: int = 72) -> Path:
    """Draw `n` training patches of `root` (VV, VH, RGB of B4/B3/B2, NDWI, label) into `out_png`.

    Chooses patches that show the confusers (bright water, dark land, clouds). The PNG is
    palette-quantized (256 colours) to stay small. Returns the path written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    split = _figure_split(Path(root))
    ids = sorted(p.stem for p in (split / "lab").glob(f"{PATCH_PREFIX}*.npy"))
    if not ids:
        raise FileNotFoundError(f"{split / 'lab'}: no demo labels")
    chosen, stats = _pick_figure_patches(split, ids, max(1, int(n)))

    label_cmap = ListedColormap(["#c8b98a", "#1f5fbf", "#d62728"])  # land, water, no-data
    columns = ("VV (dB)", "VH (dB)", "RGB (B4 B3 B2)", "NDWI", "label (red: no-data)")
    fig, axes = plt.subplots(len(chosen), 5, figsize=(10, 2.05 * len(chosen) + 0.4),
                             dpi=dpi, squeeze=False)
    for row, pid in enumerate(chosen):
        load = lambda band: np.load(split / "img" / f"{pid}_{band}.npy")  # noqa: E731
        lab = np.load(split / "lab" / f"{pid}.npy")
        rgb = np.clip(np.stack([load("B4"), load("B3"), load("B2")], axis=-1) * 3.5, 0.0, 1.0) ** 0.8
        panels = [(load("VV"), dict(cmap="gray", vmin=-25, vmax=0)),
                  (load("VH"), dict(cmap="gray", vmin=-32, vmax=-7)),
                  (rgb, {}),
                  (load("NDWI"), dict(cmap="RdBu", vmin=-1, vmax=1)),
                  (np.where(lab == NODATA, 2, lab), dict(cmap=label_cmap, vmin=0, vmax=2))]
        for col, (image, style) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(f"{pid}\nwater {100 * stats[pid]['water']:.0f}%", fontsize=8)
    fig.suptitle("Synthetic demo patches (make_demo_data.py): VV/VH in dB with speckle, "
                 "Sentinel-2 reflectance, label", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        image = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
        image.save(out_png, optimize=True)
    except ImportError:
        fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
