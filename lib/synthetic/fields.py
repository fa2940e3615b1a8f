"""Random fields and drawing for the synthetic scenes (lib/synthetic/demo.py): smooth noise, parcels,
meandering lines. Every function draws from the generator it is given, in a fixed order."""
from __future__ import annotations

import math

import cv2
import numpy as np


def smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance random field whose features are about `scale` pixels across.

    Large scales are drawn on a coarse grid, blurred and upsampled (fast); small ones are blurred
    at full resolution."""
    scale = max(float(scale), 1.0)
    if scale < 6.0:
        noise = rng.standard_normal((size, size), dtype=np.float32)
        field = cv2.GaussianBlur(noise, (0, 0), scale / 2.0, borderType=cv2.BORDER_REFLECT)
    else:
        n = max(3, int(round(2.0 * size / scale)))
        pad = 3
        noise = rng.standard_normal((n + 2 * pad, n + 2 * pad), dtype=np.float32)
        coarse = cv2.GaussianBlur(noise, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
        full = int(round(size * (n + 2 * pad) / n))
        big = cv2.resize(coarse, (full, full), interpolation=cv2.INTER_CUBIC)
        start = (full - size) // 2
        field = big[start:start + size, start:start + size]
    field = field - field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def quantile_threshold(values: np.ndarray, fraction: float) -> float:
    """Value below which `fraction` of `values` lie."""
    flat = values.ravel()
    k = int(np.clip(round(fraction * (flat.size - 1)), 0, flat.size - 1))
    return float(np.partition(flat, k)[k])


def parcels(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Piecewise-constant field of rotated rectangular parcels (agricultural fields), N(0, 1)."""
    n = max(2, int(math.ceil(2.0 * size / cell)))
    grid = rng.standard_normal((n, n)).astype(np.float32)
    big = cv2.resize(grid, (2 * size, 2 * size), interpolation=cv2.INTER_NEAREST)
    angle = rng.uniform(-40, 40)
    rot = cv2.getRotationMatrix2D((size, size), angle, 1.0)
    rot[:, 2] -= size / 2.0
    return cv2.warpAffine(big, rot, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)


def meander(rng: np.random.Generator, size: int, amplitude: float, n: int = 64) -> np.ndarray:
    """Points of a sinuous line that crosses the whole patch at a random angle, int32 (n, 2)."""
    t = np.linspace(-0.25, 1.25, n) * size
    wavelength = rng.uniform(0.35, 1.2) * size
    walk = np.cumsum(rng.normal(0.0, 0.025 * size, n))
    walk = np.convolve(walk - walk.mean(), np.ones(7) / 7, mode="same")
    offset = (amplitude * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
              + rng.uniform(-0.25, 0.25) * size + walk)
    angle = rng.uniform(0, np.pi)
    u = t - size / 2.0
    x = size / 2.0 + u * np.cos(angle) - offset * np.sin(angle)
    y = size / 2.0 + u * np.sin(angle) + offset * np.cos(angle)
    return np.stack([x, y], axis=1)


def draw_path(mask: np.ndarray, points: np.ndarray, widths: np.ndarray) -> None:
    """Draw a polyline of varying width (round joints) into a uint8 mask, in place."""
    shift = 4  # sub-pixel precision of cv2 drawing
    pts = np.round(points * (1 << shift)).astype(np.int64)
    for (x0, y0), (x1, y1), w in zip(pts[:-1], pts[1:], widths):
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, max(1, int(round(w))), cv2.LINE_8, shift)
