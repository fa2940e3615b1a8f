"""Notice a run stuck at a constant answer: validation prediction all water (IoU = the water share) or all
land (IoU 0) in every validation band, epoch after epoch, while the training loss may well be falling.

The engine calls `constant_answer_line(history, bands)` after each epoch; it returns one line when the
streak reaches CONSTANT_EPOCHS (once per streak), else None. It reads only the history rows' validation
metrics: the share of pixels predicted water follows from precision P, recall R and accuracy A, since
with N = 1, water share w = (1 - A) / ((1 - R) + R (1 - P) / P) and predicted share q = R w / P.
"""
from __future__ import annotations

import math

CONSTANT_EPOCHS = 5        # consecutive epochs of one answer before the run is told
NEARLY = 0.01              # a prediction with under 1 % of either class counts as constant

ADVICE = {
    "all water": "Focal Tversky's best constant answer under FTL_BETA > FTL_ALPHA is all water: try BCE_WEIGHT=0.5 "
                 "(docs/real-sar.md, cause 2), a lower LR or more WARMUP_EPOCHS, or a smaller BATCH_SIZE for more steps",
    "all land": "early in a run this passes; if it lasts, try more EPOCHS or a smaller BATCH_SIZE (more steps), "
                "BCE_WEIGHT=0.5, and check that water is in the training labels (the data report's water share)",
}


def shares(precision: float, recall: float, accuracy: float) -> tuple[float, float] | None:
    """(water share, predicted water share) of the validation pixels, or None where they cannot be told."""
    if any(math.isnan(v) for v in (precision, recall, accuracy)):
        return None
    if precision == 0:  # no true positive: every predicted pixel is land truly, or there is no water
        return (0.0, 1.0 - accuracy) if recall == 1 else None
    wrong = (1 - recall) + recall * (1 - precision) / precision
    if wrong == 0:
        return None  # a perfect prediction
    water = (1 - accuracy) / wrong
    return water, recall * water / precision


def answer(row: dict, band: str) -> str | None:
    """"all water" / "all land" where the epoch's validation prediction in `band` was (nearly) one class."""
    found = shares(*(row.get(f"val_{name}_{band}", math.nan) for name in ("precision", "recall", "accuracy")))
    if found is None:
        return None
    water, predicted = found
    if predicted >= 1 - NEARLY:
        return "all water"
    if predicted <= NEARLY and water > NEARLY:  # all land on dry data is the right answer
        return "all land"
    return None


def epoch_answer(row: dict, bands) -> str | None:
    """The constant answer of every band this epoch (the same in all), else None."""
    answers = {answer(row, band) for band in bands}
    return answers.pop() if len(answers) == 1 else None


def constant_answer_line(history: list[dict], bands, epochs: int = CONSTANT_EPOCHS) -> str | None:
    """One line when the last `epochs` rows (and not the one before them) gave the same constant answer."""
    if len(history) < epochs:
        return None
    latest = [epoch_answer(row, bands) for row in history[-epochs:]]
    if latest[0] is None or len(set(latest)) != 1:
        return None
    if len(history) > epochs and epoch_answer(history[-epochs - 1], bands) == latest[0]:
        return None  # said already for this streak
    kind = latest[0]
    ious = " ".join(f"{band} {history[-1].get(f'val_iou_{band}', math.nan):.3f}" for band in bands)
    return (f"constant answer: the validation prediction has been {kind} in every band for {epochs} epochs "
            f"(IoU {ious}); the model is not learning the water boundary. {ADVICE[kind]}")
