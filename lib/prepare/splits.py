"""Where each chip goes (official split, a share for val, or K folds by group) and how it is cut into patches.

Every decision is per group of chips (a chip, or every chip whose name shares a key such as the country of
Sen1Floods11's `Country_id`), so no chip and no group ever has patches on both sides of a boundary.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Iterator

import numpy as np

from lib.data.labels import IGNORE_INDEX
from lib.errors import ConfigError, DataError

HOLD_OUTS = ("test", "bolivia")  # official splits that stay out of the folds


def group_of(chip_id: str, group_by: str) -> str:
    """The key that keeps chips together: "chip" (each chip alone), "region" (the name up to its first "_",
    the country of Sen1Floods11's Country_id), or a regular expression whose first group (or match) is the key."""
    if group_by == "chip":
        return chip_id
    if group_by == "region":
        return chip_id.split("_", 1)[0]
    match = re.search(group_by, chip_id)
    if not match:
        raise DataError(f"chip {chip_id}: --group-by {group_by!r} does not match its name")
    return match.group(1) if match.groups() else match.group(0)


def balanced_bins(weights: dict[str, int], bins: int, seed: int) -> dict[str, int]:
    """{group: bin} with the bins' total weights close: groups in a seeded order, largest first, each to the
    lightest bin (so one huge region does not leave the other folds empty by chance)."""
    groups = sorted(weights)
    random.Random(seed).shuffle(groups)
    groups.sort(key=lambda g: -weights[g])  # stable: equal weights keep the seeded order
    totals, assignment = [0] * bins, {}
    for group in groups:
        target = min(range(bins), key=lambda b: totals[b])
        assignment[group] = target
        totals[target] += weights[group]
    return assignment


def assign(chips, folds: int | None, val_share: float, group_by: str, seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """({chip_id: output splits}, notes). Official splits are kept; with --folds K the train and val chips
    (or all, for formats without splits) are pooled into fold_k/val and the other folds' train, hold-outs
    (test, bolivia) stay as they are; otherwise chips without an official split are split by `val_share`."""
    notes = []
    official = {c.chip_id: c.split for c in chips if c.split is not None}
    pooled = [c for c in chips if c.split is None or (folds and c.split not in HOLD_OUTS)]
    pooled_ids = {c.chip_id for c in pooled}
    destinations = {c.chip_id: [c.split] for c in chips if c.chip_id not in pooled_ids}
    groups = defaultdict(int)
    group_of_chip = {}
    for chip in pooled:
        group_of_chip[chip.chip_id] = group_of(chip.chip_id, group_by)
        groups[group_of_chip[chip.chip_id]] += chip.height * chip.width
    if folds:
        if folds < 2:
            raise ConfigError(f"--folds {folds}: need at least 2 folds (or leave --folds out)")
        if folds > len(groups):
            raise ConfigError(f"--folds {folds}: only {len(groups)} group(s) of chips (--group-by {group_by}) to "
                              f"split; use at most {len(groups)} folds")
        bins = balanced_bins(dict(groups), folds, seed)
        for chip in pooled:
            k = bins[group_of_chip[chip.chip_id]] + 1
            destinations[chip.chip_id] = [f"fold_{k}/val"] + [f"fold_{j}/train" for j in range(1, folds + 1) if j != k]
        return destinations, notes
    if pooled:
        val_groups = share_groups(dict(groups), val_share, seed)
        if not val_groups:
            notes.append(f"val: no chip (only {len(groups)} group(s) of chips to split, or --val-share 0)")
        for chip in pooled:
            destinations[chip.chip_id] = ["val" if group_of_chip[chip.chip_id] in val_groups else "train"]
        if official:
            notes.append(f"{len(pooled)} chip(s) without an official split divided by --val-share {val_share}")
    return destinations, notes


def share_groups(weights: dict[str, int], share: float, seed: int) -> set[str]:
    """Groups for val, in a seeded order, until they hold `share` of the weight; train keeps at least one group."""
    if not 0 <= share < 1:
        raise ConfigError(f"--val-share {share}: expected a share in [0, 1)")
    groups = sorted(weights)
    random.Random(seed).shuffle(groups)
    chosen, total, goal = set(), 0, share * sum(weights.values())
    for group in groups[:-1]:
        if total >= goal or goal == 0:
            break
        chosen.add(group)
        total += weights[group]
    return chosen


def grid(size: int, patch: int, stride: int) -> int:
    """Number of windows along one axis: the last one may reach past the edge (padded with no-data)."""
    return 1 if size <= patch else -(-(size - patch) // stride) + 1


def strip_patches(bands: dict[str, np.ndarray], label: np.ndarray, patch: int, stride: int, width: int
                  ) -> Iterator[tuple[int, dict, np.ndarray]]:
    """(column index, {band: patch}, label patch) of one strip of rows (at most `patch` tall, the top of
    grid row i); window j starts at column j * stride. Past the chip's edge: NaN and no-data labels."""
    cols = grid(width, patch, stride)
    pad = ((0, patch - label.shape[0]), (0, (cols - 1) * stride + patch - width))
    label = np.pad(label, pad, constant_values=IGNORE_INDEX)
    bands = {name: np.pad(array, pad, constant_values=np.nan) for name, array in bands.items()}
    for j in range(cols):
        window = np.s_[:, j * stride:j * stride + patch]
        yield j, {name: array[window] for name, array in bands.items()}, label[window]


def strip_rows(height: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) of the rows of each grid row (stop short of start + patch at the bottom edge)."""
    return [(i * stride, min(i * stride + patch, height)) for i in range(grid(height, patch, stride))]


def cut(bands: dict[str, np.ndarray], label: np.ndarray, patch: int, stride: int
        ) -> Iterator[tuple[int, int, dict, np.ndarray]]:
    """(row index, column index, {band: patch}, label patch) of every window of whole arrays: window (i, j)
    starts at pixel (i * stride, j * stride)."""
    check_sizes(patch, stride)
    for i, (start, stop) in enumerate(strip_rows(label.shape[0], patch, stride)):
        strip = {name: array[start:stop] for name, array in bands.items()}
        for j, patches, label_patch in strip_patches(strip, label[start:stop], patch, stride, label.shape[1]):
            yield i, j, patches, label_patch


def check_sizes(patch: int, stride: int) -> None:
    if patch < 1 or stride < 1:
        raise ConfigError(f"--patch {patch} / --stride {stride}: expected positive sizes")


def valid_share(bands: dict[str, np.ndarray], label: np.ndarray) -> float:
    """Share of pixels with a water/land label and a finite value in every band."""
    valid = label != IGNORE_INDEX
    for array in bands.values():
        valid &= np.isfinite(array)
    return float(valid.mean())
