"""Distillation losses beyond the published response term (lib_kd/training_kd.py: soft_bce).

    feature_loss(student_features, teacher_features, "mse" | "cosine")     # Romero et al. 2015 (FitNets)
    channel_wise_loss(student_logits, teacher_logits, temperature, valid)    # Shu et al. 2021 (CWD)
    affinity_loss(student_features, teacher_features, grid)                  # Liu et al. 2019 (structured KD)

All take float tensors [B, C, H, W] and return a scalar; the teacher side is detached. The maps of a pair
are brought to a common resolution first (`match_resolution`: the finer one is average-pooled to the
coarser), so a student on an 8 x 8 token grid pairs with a teacher decoder at 32 x 32 and the reverse.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_LOSSES = ("mse", "cosine")


def match_resolution(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps at the coarser of their two resolutions (adaptive average pooling of the finer one):
    pooling loses nothing the coarser map could be compared with, and it keeps the cost at the small size."""
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    if tuple(student.shape[-2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[-2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distance between an adapted student map and a teacher map of the same shape [B, C, H, W].

    "mse": mean squared difference divided by the teacher map's mean square, so that the weight means the
    same for a teacher whose features are of size 0.1 and one whose features are of size 10 (0 when equal,
    1 when the student map is all zeros). "cosine": mean over positions of 1 - cosine similarity of the
    channel vectors (scale-free by construction)."""
    teacher = teacher.detach().float()
    student = student.float()
    if student.shape != teacher.shape:
        raise ValueError(f"feature maps differ in shape: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    if kind == "mse":
        return (student - teacher).pow(2).mean() / teacher.pow(2).mean().clamp_min(1e-12)
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=1, eps=1e-8)).mean()
    raise ValueError(f"feature loss {kind!r}: choose one of {', '.join(FEATURE_LOSSES)}")


def channel_wise_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """Channel-wise distillation: for each image and channel, a softmax over its spatial positions at
    temperature T, then T^2 * KL(teacher || student), averaged over images and channels (Shu et al. 2021).
    For the one-channel water logit it teaches where the water is relative to the rest of the patch.

    `valid` [B, 1 or C, H, W] (bool) leaves positions out of both distributions (no-data pixels); an image
    with no valid position contributes nothing."""
    teacher = teacher.detach().float()
    student = student.float()
    if student.shape != teacher.shape:
        raise ValueError(f"maps differ in shape: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")
    b, c = student.shape[:2]
    s = (student / temperature).reshape(b, c, -1)
    t = (teacher / temperature).reshape(b, c, -1)
    if valid is None:
        valid = torch.ones_like(s, dtype=torch.bool)
    else:
        valid = valid.expand_as(student).reshape(b, c, -1)
    s = s.masked_fill(~valid, float("-inf"))
    t = t.masked_fill(~valid, float("-inf"))
    has_valid = valid.any(dim=-1)                                             # [B, C]
    log_p_s = torch.log_softmax(torch.where(has_valid[..., None], s, torch.zeros_like(s)), dim=-1)
    log_p_t = torch.log_softmax(torch.where(has_valid[..., None], t, torch.zeros_like(t)), dim=-1)
    p_t = log_p_t.exp()
    kl = torch.where(valid, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t)).sum(dim=-1)   # [B, C]
    kl = torch.where(has_valid, kl, torch.zeros_like(kl))
    return temperature ** 2 * kl.sum() / has_valid.sum().clamp_min(1)


def affinity(features: torch.Tensor) -> torch.Tensor:
    """[B, N, N] cosine similarities between the N = H * W positions of a map [B, C, H, W]."""
    flat = F.normalize(features.float().flatten(2), dim=1, eps=1e-8)           # [B, C, N], unit channel vectors
    return flat.transpose(1, 2) @ flat


def affinity_loss(student: torch.Tensor, teacher: torch.Tensor, grid: int = 16) -> torch.Tensor:
    """Pairwise (structured) distillation: the student's and the teacher's position-to-position cosine
    similarities on a common grid of at most `grid` x `grid` cells (average-pooled), mean squared
    difference over all pairs. Channel counts may differ: no adapter is needed."""
    student, teacher = match_resolution(student.float(), teacher.detach().float())
    side = (min(grid, student.shape[-2]), min(grid, student.shape[-1]))
    student, teacher = F.adaptive_avg_pool2d(student, side), F.adaptive_avg_pool2d(teacher, side)
    return (affinity(student) - affinity(teacher)).pow(2).mean()
