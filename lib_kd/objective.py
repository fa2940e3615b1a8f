"""The distillation objective: the engine's loss plug-in (lib/train/engine.py) that kd.py trains with.

    L = KD_ALPHA * L_KD + KD_BETA * L_supervised
    L_KD = T^2 * mean over valid pixels of BCE-with-logits(student_logits / T, sigmoid(teacher_logits / T))

L_supervised is the engine's Focal Tversky loss; valid pixels are those whose target is not 255
(no-data). T^2 keeps the gradient of the soft term at the scale of T = 1 (Hinton et al. 2015).
`KDObjective` is the engine's loss plug-in: per batch one student forward (trained) and one teacher
forward (torch.no_grad, the engine's autocast, eval mode). The teacher is held by the objective, a
plain object, so the engine's model.train() never reaches it.

Added methods (lib_kd/losses.py), each with its own weight, 0 = off, all combinable:
    + KD_FEATURE * feature_loss(adapter(student map), teacher map)      learned 1x1 conv adapter
    + KD_CWD * channel_wise_loss(student logits, teacher logits, T)     softmax over positions, KL
    + KD_AFFINITY * affinity_loss(student map, teacher map)            pairwise cosine similarities
The maps are read with forward hooks (lib_kd/features.py). The adapter is trained with the student: the
engine hands `objective.parameters()` to its optimizer and keeps `objective.state_dict()` in last.pt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib.checkpoint import load_state
from lib.config import Constants, as_constants
from lib.data.labels import IGNORE_INDEX
from lib.models.factory import build_model
from lib.train.engine import evaluate
from lib_kd.features import FeatureTap, default_layer, probe, unwrap
from lib_kd.losses import affinity_loss, channel_wise_loss, feature_loss, match_resolution
from lib_kd.model_kd import Teacher


# ---------------------------------------------------------------------------------------------- loss

def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean over `valid` pixels of BCE-with-logits(student / T, sigmoid(teacher / T)), without the T^2 factor.
    Pixels outside `valid` contribute exactly nothing (not even NaN), whatever their logits."""
    soft_targets = torch.sigmoid(teacher_logits.detach().float() / temperature)
    per_pixel = F.binary_cross_entropy_with_logits(student_logits.float() / temperature, soft_targets, reduction="none")
    per_pixel = torch.where(valid, per_pixel, torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device))
    return per_pixel.sum() / valid.sum().clamp_min(1)


class DistillationLoss(nn.Module):
    """(L, L_KD, L_supervised) from student logits, teacher logits and targets (1 water, 0 not, 255 no-data).

    With alpha = 0 the KD term is still computed for the history (without gradient) but is not added:
    L is then beta * L_supervised exactly (the engine's loss, bit for bit, when beta = 1)."""

    def __init__(self, supervised: nn.Module, temperature: float = 4.0, alpha: float = 0.5, beta: float = 0.5,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"KD_TEMPERATURE must be > 0, got {temperature}")
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise ValueError(f"KD_ALPHA and KD_BETA must be >= 0 and not both 0, got {alpha} and {beta}")
        self.supervised = supervised
        self.temperature, self.alpha, self.beta, self.ignore_index = float(temperature), float(alpha), float(beta), ignore_index

    def kd_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return t * t * soft_bce(student_logits, teacher_logits, targets != self.ignore_index, t)

    def forward(self, student_logits, teacher_logits, targets):
        sup = self.supervised(student_logits, targets)
        if self.alpha == 0:
            with torch.no_grad():
                kd = self.kd_term(student_logits, teacher_logits, targets)
            return self.beta * sup, kd, sup
        kd = self.kd_term(student_logits, teacher_logits, targets)
        return self.alpha * kd + self.beta * sup, kd, sup


# ----------------------------------------------------------------------------------------- methods

@dataclass
class KDMethods:
    """The weights (0 = off) and settings of the methods added to the response term; kd.py's KD_* constants."""
    feature: float = 0.0                 # KD_FEATURE
    feature_loss: str = "mse"            # KD_FEATURE_LOSS: "mse" or "cosine"
    cwd: float = 0.0                     # KD_CWD
    affinity: float = 0.0                # KD_AFFINITY
    affinity_grid: int = 16              # KD_AFFINITY_GRID
    student_layer: str | None = None     # KD_FEATURE_STUDENT_LAYER; None: the architecture's default
    teacher_layer: str | None = None     # KD_FEATURE_TEACHER_LAYER

    @classmethod
    def from_constants(cls, c: Constants | dict) -> "KDMethods":
        c = as_constants(c)  # typed and ranged once by the constants table (lib/constants_table.py)
        return cls(**{f: c[name] for f, name in METHOD_CONSTANTS.items() if name in c})

    @property
    def needs_features(self) -> bool:
        return self.feature > 0 or self.affinity > 0

    def columns(self) -> tuple[str, ...]:
        return tuple(column for column, weight in (("feat_loss", self.feature), ("cwd_loss", self.cwd),
                                                   ("aff_loss", self.affinity)) if weight > 0)

    def label(self) -> str:
        """Short name of the combination, e.g. "response + feature 1 + cwd 0.5"."""
        parts = [f"{name} {weight:g}" for name, weight in (("feature", self.feature), ("cwd", self.cwd),
                                                          ("affinity", self.affinity)) if weight > 0]
        return " + ".join(["response", *parts])


METHOD_CONSTANTS = {"feature": "KD_FEATURE", "feature_loss": "KD_FEATURE_LOSS", "cwd": "KD_CWD",
                    "affinity": "KD_AFFINITY", "affinity_grid": "KD_AFFINITY_GRID",
                    "student_layer": "KD_FEATURE_STUDENT_LAYER", "teacher_layer": "KD_FEATURE_TEACHER_LAYER"}


class FeaturePair:
    """The student and teacher feature maps of one distillation run and the adapter between them.

    The student's layer is probed on a copy built from (name, args) so the adapter's shape is known before
    training starts; the tap on the trained student is attached at its first forward (the engine builds it)."""

    def __init__(self, student_name: str, student_args: dict, teacher: nn.Module, teacher_name: str,
                 methods: KDMethods, image_size: int, seed: int = 0):
        probe_student = build_model(student_name, student_args)
        self.student_layer = methods.student_layer or default_layer(student_name, probe_student)
        self.teacher_layer = methods.teacher_layer or default_layer(teacher_name, teacher)
        self.student_shape = probe(probe_student, self.student_layer, "KD_FEATURE_STUDENT_LAYER", image_size)
        self.teacher_shape = probe(teacher, self.teacher_layer, "KD_FEATURE_TEACHER_LAYER", image_size)
        self.teacher_tap = FeatureTap(teacher, self.teacher_layer, "KD_FEATURE_TEACHER_LAYER")
        self.student_tap: FeatureTap | None = None
        self.student_model: nn.Module | None = None
        self.adapter = None
        if methods.feature > 0:
            with torch.random.fork_rng(devices=[]):  # the same adapter for the same SEED, whatever ran before
                torch.manual_seed(seed)
                self.adapter = nn.Conv2d(self.student_shape.channels, self.teacher_shape.channels, 1)

    def attach(self, student: nn.Module) -> None:
        student = unwrap(student)
        if student is not self.student_model:
            if self.student_tap:
                self.student_tap.remove()
            self.student_tap = FeatureTap(student, self.student_layer, "KD_FEATURE_STUDENT_LAYER")
            self.student_model = student

    def describe(self) -> str:
        s, t = self.student_shape, self.teacher_shape
        adapter = f", adapter 1x1 conv {s.channels}->{t.channels}" if self.adapter is not None else ""
        return (f"features: student {self.student_layer} [{s.channels}, {s.height}, {s.width}] <-> teacher "
                f"{self.teacher_layer} [{t.channels}, {t.height}, {t.width}]{adapter}")


# ----------------------------------------------------------------------------------------- objective

class KDObjective:
    """The engine's loss plug-in: `objective(student, images, targets) -> (loss, {"kd_loss", "sup_loss", ...})`.

    With `methods` (KDMethods) and `features` (FeaturePair, needed by the feature and affinity terms) the
    added terms are summed into the loss and logged as feat_loss, cwd_loss, aff_loss."""
    columns = ("kd_loss", "sup_loss")

    def __init__(self, teacher: Teacher | nn.Module, loss: DistillationLoss, bands=("VV", "VH"), progress: bool = False,
                 methods: KDMethods | None = None, features: FeaturePair | None = None):
        self.teacher_info = teacher if isinstance(teacher, Teacher) else None
        self.teacher = teacher.model if isinstance(teacher, Teacher) else teacher
        self.loss = loss
        self.bands, self.progress = tuple(bands), progress
        self.methods = methods or KDMethods()
        if self.methods.needs_features and features is None:
            raise ValueError("KD_FEATURE and KD_AFFINITY need the feature maps: pass features=FeaturePair(...)")
        self.features = features
        self.columns = KDObjective.columns + self.methods.columns()
        # the adapter lives here, not in the student: best.pt stays the plain student
        self.trained = nn.ModuleDict({"adapter": features.adapter} if features and features.adapter is not None else {})
        self.device = None
        self.teacher_val: dict | None = None
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    # the engine's hooks for a plug-in's own trained modules: its optimizer and last.pt
    def parameters(self) -> list[nn.Parameter]:
        return list(self.trained.parameters())

    def state_dict(self) -> dict:
        return self.trained.state_dict()

    def load_state_dict(self, state: dict) -> None:
        load_state(self.trained, state, "last.pt (distillation adapter)")

    def to(self, device: torch.device, memory_format=torch.channels_last) -> None:
        if self.device != device:
            # the student's memory format (CHANNELS_LAST): the teacher's convolutions, MobileNetV2's
            # depthwise ones above all, run 1.5-3x faster in channels_last; the weights' values do not change
            self.teacher.to(device, memory_format=memory_format)
            self.loss.to(device)
            self.trained.to(device)
            self.device = device

    def start(self, device, val_loader, precision: str, memory_format=torch.channels_last) -> None:
        """Called once by the engine before the first epoch: move the teacher to the student's device and
        score it on the very validation loader (and precision) the student is scored on."""
        self.to(device, memory_format)
        val_loss, metrics = evaluate(self.teacher, val_loader, self.loss.supervised, self.bands, device, precision,
                                     progress=self.progress)
        self.teacher_val = {"loss": val_loss, **metrics}
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            ious = " ".join(f"{b} {metrics[f'iou_{b}']:.3f}" for b in self.bands)
            print(f"teacher on val: IoU {ious} mean {metrics['iou']:.3f} (loss {val_loss:.4f})")

    def __call__(self, model, images, targets):
        self.to(images.device)
        if self.teacher.training:  # nothing in the engine reaches the teacher; keep it so whatever happens
            self.teacher.eval()
        taps = []
        if self.features:
            self.features.attach(model)
            taps = [self.features.student_tap, self.features.teacher_tap]
        for tap in taps:
            tap.active = True
        try:
            logits = model(images)
            with torch.no_grad():  # inside the engine's autocast, like the student's forward
                teacher_logits = self.teacher(images)
        finally:
            for tap in taps:
                tap.active = False
        loss, kd, sup = self.loss(logits, teacher_logits, targets)
        extras = {"kd_loss": kd.detach(), "sup_loss": sup.detach()}
        m = self.methods
        if taps:
            student_map, teacher_map = taps[0].take(), taps[1].take()
            if m.feature > 0:
                pooled_student, pooled_teacher = match_resolution(student_map, teacher_map)
                term = feature_loss(self.trained["adapter"](pooled_student), pooled_teacher, m.feature_loss)
                loss, extras["feat_loss"] = loss + m.feature * term, term.detach()
            if m.affinity > 0:
                term = affinity_loss(student_map, teacher_map, int(m.affinity_grid))
                loss, extras["aff_loss"] = loss + m.affinity * term, term.detach()
        if m.cwd > 0:
            term = channel_wise_loss(logits, teacher_logits, self.loss.temperature, targets != self.loss.ignore_index)
            loss, extras["cwd_loss"] = loss + m.cwd * term, term.detach()
        return loss, extras

    def summary(self) -> dict:
        """The engine's extra_summary hook: what summary.json records of the teacher and the methods."""
        info = self.teacher_info.info() if self.teacher_info else {}
        methods = {**asdict(self.methods), "label": self.methods.label(),
                   "adapter_parameters": sum(p.numel() for p in self.parameters())}
        if self.features:
            methods["layers"] = {"student": self.features.student_layer, "teacher": self.features.teacher_layer}
        return {**info, "teacher_val": self.teacher_val, "kd_methods": methods}
