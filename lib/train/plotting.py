"""curves.png: losses and per-band validation IoU over epochs."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lib.checkpoint import atomic_write  # noqa: E402


def plot_curves(history: list[dict], bands, path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, iou_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key in [k for k in history[0] if k.endswith("_loss")]:
        loss_axis.plot(epochs, [row[key] for row in history], marker=".", label=key)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_axis.legend()
    for band in bands:
        iou_axis.plot(epochs, [row[f"val_iou_{band}"] for row in history], marker=".", label=f"IoU {band}")
    iou_axis.plot(epochs, [row["val_iou"] for row in history], "k--", label="IoU mean")
    iou_axis.set(xlabel="epoch", ylabel="water IoU", title="validation IoU", ylim=(0, 1))
    iou_axis.legend()
    figure.tight_layout()
    try:
        atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    finally:
        plt.close(figure)
