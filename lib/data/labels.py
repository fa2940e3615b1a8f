"""Label conventions shared by datasets, losses, metrics and data preparation: a target is uint8 with
1 water, 0 not water and IGNORE_INDEX for no-data (ignored by the loss and the metrics)."""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


def label_to_target(raw: np.ndarray, water=1, land=0) -> np.ndarray:
    """uint8 target: `water` -> 1, `land` -> 0, every other value (e.g. -1, 255, NaN) -> IGNORE_INDEX."""
    raw = np.asarray(raw)
    target = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    target[raw == water] = 1
    target[raw == land] = 0
    return target
