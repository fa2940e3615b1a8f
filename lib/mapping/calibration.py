"""Calibrated water probability: temperature scaling (Guo et al., "On calibration of modern neural
networks", ICML 2017) of the blended probability, p' = sigmoid(logit(p) / T), with T fitted on labelled
validation pixels by minimizing the negative log-likelihood; the reliability diagram and the expected
calibration error (ECE: the pixel-weighted mean |accuracy - confidence| over equal-width bins of the
predicted water probability) say how well p' matches the observed water frequency.

calibrate.py fits T on labelled chips; predict.py --likelihood applies it (--temperature, default the
checkpoint's calibration.temperature when it has one, else 1: the model's own probability).
"""
from __future__ import annotations

import numpy as np

EPS = 1e-6
BINS = 10


def logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probability, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def calibrate(probability: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T), float32; T = 1 returns p (clipped to [EPS, 1 - EPS])."""
    return (1.0 / (1.0 + np.exp(-logit(probability) / temperature))).astype(np.float32)


def reliability(probability: np.ndarray, label: np.ndarray, bins: int = BINS) -> dict:
    """Per equal-width bin of the predicted probability: pixels, mean probability, water frequency;
    and the ECE over the bins (weighted by pixels)."""
    p = np.asarray(probability, np.float64).ravel()
    y = np.asarray(label, np.float64).ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence = np.bincount(index, weights=p, minlength=bins) / np.maximum(count, 1)
    frequency = np.bincount(index, weights=y, minlength=bins) / np.maximum(count, 1)
    ece = float((count * np.abs(frequency - confidence)).sum() / max(count.sum(), 1))
    return {"ece": ece, "pixels": count.tolist(), "mean_probability": confidence.tolist(),
            "water_frequency": frequency.tolist()}


def negative_log_likelihood(logits: np.ndarray, label: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-z)) for water, log(1 + exp(z)) for not water, computed stably
    return float(np.mean(np.logaddexp(0.0, np.where(label > 0, -z, z))))


def fit_temperature(probability: np.ndarray, label: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] with the least negative log-likelihood (golden-section search on log T: the
    NLL of temperature scaling is unimodal in T)."""
    logits = logit(np.asarray(probability).ravel())
    y = np.asarray(label).ravel()
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(60):
        if negative_log_likelihood(logits, y, np.exp(c)) < negative_log_likelihood(logits, y, np.exp(d)):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return float(np.exp((a + b) / 2.0))


def reliability_plot(curves: dict[str, dict], path) -> None:
    """Reliability diagram: water frequency against mean predicted probability per bin, one line per
    curve (e.g. before / after calibration), the diagonal for reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for name, curve in curves.items():
        used = np.asarray(curve["pixels"]) > 0
        axis.plot(np.asarray(curve["mean_probability"])[used], np.asarray(curve["water_frequency"])[used],
                  marker="o", label=f"{name} (ECE {curve['ece']:.3f})")
    axis.set_xlabel("predicted water probability")
    axis.set_ylabel("observed water frequency")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
