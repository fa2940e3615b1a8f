"""The change test of a pre/post-event pair: flood is water now, not water before, AND a significant
decrease in backscatter (the log-ratio, post minus pre in dB, below a threshold), as change-detection
flood services do (GFM's change-detection algorithm, UN-SPIDER's recommended practice): two independent
classifications alone call flood wherever they happen to disagree, even where nothing changed.

--change-db:
    auto  (default) fitted per scene on the log-ratio of decimated samples of both scenes: most pixels of a
          scene did not change, so the median and the robust spread (1.4826 x MAD) of the log-ratio describe
          "no change" (speckle, a calibration offset between the dates); the threshold is
          median - AUTO_SIGMAS x spread, and at most AUTO_MAX_DB (a halving of the backscatter is the least
          decrease called significant, also on a scene whose dates have identical pixels: spread 0); and
          where both classifications are confident (water now with probability >= CONFIDENT, before <=
          1 - CONFIDENT) that least decrease, AUTO_MAX_DB, suffices: the fit guards against speckle, and a
          pixel that crossed from sure land to sure water has changed more than speckle moves a pixel that
          stays near the water/land boundary
    -3    a fixed threshold in dB (negative: a decrease)
    off   no change test: flood is water now and not before, as without it

With several bands the log-ratio is the mean of the bands' log-ratios. Pixels that are water now, not
water before and show no significant decrease become class WATER_NO_CHANGE (3) of the flood raster
("water now without a change"), apart from class 2 (permanent or pre-event water: "unchanged water").
"""
from __future__ import annotations

import numpy as np

from lib.errors import InferenceError
from lib.mapping.flood import FLOOD

WATER_NO_CHANGE = 3
AUTO_SIGMAS = 2.5        # ~0.6 % of a Gaussian no-change log-ratio falls below median - 2.5 sigma
AUTO_MAX_DB = -3.0
MIN_FIT_PIXELS = 100     # fewer valid pixels pairs in the samples: AUTO_MAX_DB
CONFIDENT = 0.95         # auto: both classifications this sure need only a decrease below AUTO_MAX_DB


def parse_change_db(text) -> float | str | None:
    """--change-db: "auto", "off" (None) or a negative number of dB; anything else one clear error."""
    if text is None or text == "auto":
        return "auto"
    if text == "off":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InferenceError(f"--change-db must be auto, off or a negative number of dB (e.g. -3), "
                             f"got {text!r}") from None
    if not np.isfinite(value) or value >= 0:
        raise InferenceError(f"--change-db must be a negative number of dB (a decrease, e.g. -3), got {text!r}")
    return value


def fit_change_db(post_db: list[np.ndarray], pre_db: list[np.ndarray]) -> dict:
    """The auto threshold from same-grid samples of each band (dB) of both scenes: see the module docstring."""
    ratio = mean_log_ratio(post_db, pre_db)
    values = ratio[np.isfinite(ratio)]
    if values.size < MIN_FIT_PIXELS:
        return {"threshold_db": AUTO_MAX_DB, "median_db": None, "sigma_db": None, "sample_pixels": int(values.size)}
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    return {"threshold_db": min(AUTO_MAX_DB, median - AUTO_SIGMAS * sigma), "median_db": median,
            "sigma_db": sigma, "sample_pixels": int(values.size)}


def mean_log_ratio(post_db: list[np.ndarray], pre_db: list[np.ndarray]) -> np.ndarray:
    """Post minus pre in dB, averaged over the bands (NaN where any band is missing)."""
    return np.mean([np.asarray(a, np.float32) - np.asarray(b, np.float32) for a, b in zip(post_db, pre_db)], axis=0)


class ChangeTest:
    """Takes the post-event rows the engine read (or reads them) and reads the pre-event scene's on the
    post-event grid (raw values, converted to dB by `to_db`, one per band), and demotes flood without a
    significant decrease to WATER_NO_CHANGE."""

    def __init__(self, post_reader, pre_reader, to_db: list, threshold_db: float, confident: bool = False):
        self.post, self.pre, self.to_db, self.threshold_db = post_reader, pre_reader, to_db, threshold_db
        self.confident = confident  # auto: sure land before and sure water now need only AUTO_MAX_DB
        self.decrease_pixels = 0

    def log_ratio(self, row0: int, row1: int, post: np.ndarray | None = None) -> np.ndarray:
        """Post minus pre in dB for rows [row0, row1), NaN where unknown; `post`: those rows of the
        post-event scene as the engine read them ([bands, rows, width] raw), else they are read."""
        post = self.post.read(row0, row1) if post is None else post
        pre = self.pre.read(row0, row1)
        post, pre = (post[None] if post.ndim == 2 else post), (pre[None] if pre.ndim == 2 else pre)
        return mean_log_ratio([f(b) for f, b in zip(self.to_db, post)], [f(b) for f, b in zip(self.to_db, pre)])

    def apply(self, row0: int, classes: np.ndarray, post_probability: np.ndarray | None = None,
              pre_probability: np.ndarray | None = None, post: np.ndarray | None = None) -> np.ndarray:
        """Flood (class 1) without a significant decrease becomes WATER_NO_CHANGE; where the log-ratio is
        unknown (no pre-event value) the flood classes already say no-data. post: see `log_ratio`."""
        ratio = self.log_ratio(row0, row0 + len(classes), post)
        known = np.isfinite(ratio)
        ratio = np.nan_to_num(ratio, nan=0.0)
        decrease = known & (ratio < self.threshold_db)
        if self.confident and post_probability is not None and pre_probability is not None:
            sure = (post_probability >= CONFIDENT) & (np.nan_to_num(pre_probability, nan=1.0) <= 1 - CONFIDENT)
            decrease |= known & sure & (ratio < AUTO_MAX_DB)
        self.decrease_pixels += int(decrease.sum())
        classes[(classes == FLOOD) & known & ~decrease] = WATER_NO_CHANGE
        return classes


def build_change_test(change_db, post_reader, pre_reader, post_samples: list, pre_samples: list, units: str,
                      calibration_db: float) -> tuple[ChangeTest | None, dict]:
    """(the change test or None when off, the summary's "change" block without the counts) from the
    option, both scenes' readers on the grid and their decimated samples (raw, one per band)."""
    from lib.mapping.rasters import to_db
    if change_db is None:
        return None, {"test": "off"}
    if change_db != "auto":
        record = {"test": "fixed", "threshold_db": float(change_db)}
    else:
        to = [to_db(s, units, calibration_db) for s in post_samples]
        fro = [to_db(s, units, calibration_db) for s in pre_samples]
        shapes = {a.shape for a in to + fro}
        record = {"test": "auto", **(fit_change_db(to, fro) if len(shapes) == 1
                                     else {"threshold_db": AUTO_MAX_DB, "median_db": None, "sigma_db": None,
                                           "sample_pixels": 0}),
                  "confident_probability": CONFIDENT, "confident_threshold_db": AUTO_MAX_DB}
    converters = [lambda raw: to_db(raw, units, calibration_db)] * len(post_samples)
    return ChangeTest(post_reader, pre_reader, converters, record["threshold_db"], change_db == "auto"), record


def change_report(record: dict, flood: dict | None) -> dict:
    """The summary's "change" block: the test, and the pixels of flood, unchanged water and water now
    without a change (from the flood classes' report)."""
    if flood is None or record.get("test") == "off":
        return record
    classes = flood["classes"]
    pixels = {key: classes[name]["pixels"] for key, name in (
        ("flood_pixels", "flood"), ("unchanged_water_pixels", "permanent_or_pre_event_water"),
        ("water_without_change_pixels", "water_no_change")) if name in classes}
    return {**record, **pixels}
