"""Focal Tversky loss for binary water masks, with no-data pixels ignored.

    TI = (TP + s) / (TP + alpha * FP + beta * FN + s),   loss = (1 - TI) ** gamma

computed over the whole batch (as smp's binary TverskyLoss does) on sigmoid probabilities. Unlike
smp's TverskyLoss, a batch without any water still counts: with smoothing s = 1, false positives on a
dry batch lower TI, so they are penalized, and a perfect dry prediction gives 0. (1 - TI) is clamped
away from 0 so that gamma < 1 never yields an infinite or NaN gradient.

`FocalTverskyBCE` adds `bce_weight` x the binary cross-entropy averaged over the labelled pixels
(BCE_WEIGHT). Focal Tversky alone, with beta > alpha, has its best constant answer at "everything is
water" (TI = W / (W + alpha L)); training drifts there first, the sigmoid saturates and small data never
leave it. Cross-entropy scores every pixel on its own and has no such minimum; it trains small data, but
models trained with it on the demo data transfer worse to the real chip, so the default stays 0
(docs/real-sar.md).

Default gamma 0.75 is the focal exponent of Abraham & Khan (2019, 1/gamma with gamma = 4/3);
gamma = 1 is plain Tversky, which is what the published SAR-KD-Flood code computes.

The sums are those of smp's soft_tversky_score (FP = sum(p) - TP, FN = sum(t) - TP), written with float
masks and one dot product: comparisons and bool-to-float casts are unvectorized, slow kernels on the CPU,
and at full resolution they made the loss a quarter of a small student's training step.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from lib.config import Constants, with_defaults
from lib.data.labels import IGNORE_INDEX


class FocalTverskyLoss(nn.Module):
    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75,
                 smooth: float = 1.0, eps: float = 1e-7, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.smooth, self.eps, self.ignore_index = smooth, eps, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits [B, 1, H, W] (raw), target [B, 1, H, W] with 0/1 and ignore_index."""
        labels = target.float()
        truth = equals(labels, 1)
        probability = torch.sigmoid(logits.float()) * (1 - equals(labels, self.ignore_index))  # no-data: no FP, no TP
        tp = torch.dot(probability.flatten(), truth.flatten())
        fp, fn = probability.sum() - tp, truth.sum() - tp
        score = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(self.eps)
        return (1.0 - score).clamp_min(self.eps) ** self.gamma


def equals(labels: torch.Tensor, value: float) -> torch.Tensor:
    """1.0 where the integer-valued float tensor `labels` equals `value`, else 0.0, in float arithmetic only."""
    return (1 - (labels - value).abs_()).clamp_(min=0)


class FocalTverskyBCE(nn.Module):
    """Focal Tversky plus `bce_weight` x binary cross-entropy over the labelled pixels (no-data ignored)."""

    def __init__(self, tversky: FocalTverskyLoss, bce_weight: float = 1.0):
        super().__init__()
        self.tversky, self.bce_weight = tversky, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = target.float()
        labelled = 1 - equals(labels, self.tversky.ignore_index)
        bce = nn.functional.binary_cross_entropy_with_logits(logits.float(), equals(labels, 1), weight=labelled,
                                                             reduction="sum") / labelled.sum().clamp_min(1)
        return self.tversky(logits, target) + self.bce_weight * bce


def supervised_loss(c: Mapping) -> nn.Module:
    """The engine's loss: Focal Tversky (FTL_*), plus BCE_WEIGHT x cross-entropy when BCE_WEIGHT > 0 (0: the
    published loss). `c`: resolved Constants, or a plain dict (a checkpoint's recorded constants), completed
    with the defaults."""
    c = c if isinstance(c, Constants) else with_defaults(c)
    tversky = FocalTverskyLoss(alpha=c["FTL_ALPHA"], beta=c["FTL_BETA"], gamma=c["FTL_GAMMA"])
    return FocalTverskyBCE(tversky, c["BCE_WEIGHT"]) if c["BCE_WEIGHT"] > 0 else tversky
