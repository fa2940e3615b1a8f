"""Knowledge distillation on top of the one training engine (lib/train/engine.py).

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

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lib.cli import HELP, split_argument
from lib.checkpoint import CheckpointError, load_state, plain
from lib.config import check_constants, check_value
from lib.errors import ConfigError
from lib.data.factory import data_settings, resolve_data_constants
from lib.data.labels import IGNORE_INDEX
from lib.train.engine import evaluate, supervised_loss, train
from lib.models.factory import build_model
from lib.train.run_lock import is_main_process
from lib_kd.model_kd import (Teacher, full_args, inherit_teacher_data, load_teacher, student_args,
                             train_command, train_script)
from lib.bench.cost import model_cost
from lib_kd.features import FeatureTap, default_layer, probe, unwrap
from lib_kd.losses import affinity_loss, channel_wise_loss, feature_loss, match_resolution


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
    def from_constants(cls, c: dict) -> "KDMethods":
        # the constants table (lib/config.py) knows each one's type and range
        methods = cls(**{f: check_value(name, c[name]) for f, name in METHOD_CONSTANTS.items() if name in c})
        return methods

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


# ------------------------------------------------------------------------------------------------ run

def added_methods(c: dict, teacher: Teacher, name: str, args: dict) -> tuple[KDMethods, FeaturePair | None]:
    """The methods of kd.py's KD_* constants, and the feature maps they pair (None when no term needs them)."""
    methods = KDMethods.from_constants(c)
    features = None
    if methods.needs_features:
        features = FeaturePair(name, args, teacher.model, teacher.name, methods, int(c["IMAGE_SIZE"]), int(c["SEED"]))
    return methods, features


def resolve_output_dir(c: dict) -> str:
    return str(c.get("OUTPUT_DIR") or f"runs/kd_{c['STUDENT'].lower()}")


def distill(constants: dict, table: bool = True) -> dict:
    """Train c["STUDENT"] against the teacher of c["TEACHER_CHECKPOINT"]; returns the engine's summary.
    With `table`, prints the comparison table at the end (COST_TABLE: with GFLOPs and CPU latency)."""
    c = {**constants, "OUTPUT_DIR": resolve_output_dir(constants)}
    # a teacher file that cannot be read is a CheckpointError; the inherited values are checked as well
    # (PATCH must divide the teacher's IMAGE_SIZE)
    c = check_constants(inherit_teacher_data(c))
    name, args = c["STUDENT"], student_args(c)
    try:
        build_model(name, args)  # fail before the teacher and the data are loaded
    except (TypeError, ValueError) as error:
        raise ConfigError(f"STUDENT={name!r} cannot be built with {args} (from STUDENT_ARGS and the student "
                          f"constants): {error}") from None
    try:
        loss = DistillationLoss(supervised_loss(c), c["KD_TEMPERATURE"], c["KD_ALPHA"], c["KD_BETA"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    teacher = load_teacher(c["TEACHER_CHECKPOINT"], c)  # TeacherError / CheckpointError name the file
    check_resumed_teacher(c, teacher)
    methods, features = added_methods(c, teacher, name, args)
    check_resumed_methods(c, methods)
    is_main = is_main_process()
    if is_main:
        print(f"teacher {teacher.name} from {teacher.path}: {teacher.parameters['held']:,} parameters held, "
              f"{teacher.parameters['used']:,} used; T={loss.temperature:g} alpha={loss.alpha:g} beta={loss.beta:g}; "
              f"{methods.label()}")
        if features:
            print(features.describe())
    resolved = resolve_data_constants(c)  # what the engine will use (defaults, KOMPSAT-5 bands)
    objective = KDObjective(teacher, loss, bands=resolved["VAL_BANDS"], progress=bool(resolved["PROGRESS"]) and is_main,
                            methods=methods, features=features)
    summary = train(c, name, args, objective=objective, extra_summary=objective.summary)
    if is_main and table:
        print(comparison_table(resolved, summary, teacher, objective.teacher_val or {}, cost=bool(c.get("COST_TABLE", True))))
    return summary


def sweep_values(argv: list[str], name: str) -> tuple[list[str], list[float] | None]:
    """(argv without it, the values) of a comma-separated `NAME=v1,v2,...` argument; (argv, None) when
    `name` is absent or has a single value."""
    rest, values = [], None
    for arg in argv:
        key, text = split_argument(arg) if arg not in HELP else (arg, "")
        if key == name and "," in text:
            try:
                values = [float(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{name}={text!r}: expected numbers separated by commas, e.g. {name}=1,2,4,8") from None
        else:
            rest.append(arg)
    return rest, values


def distill_sweep(constants: dict, name: str, values: list) -> list[dict]:
    """One distillation per value of constant `name` (kd.py KD_TEMPERATURE=1,2,4,8), each in
    <OUTPUT_DIR>_<short name><value>, then one table of all of them."""
    short = {"KD_TEMPERATURE": "T"}.get(name, name.lower())
    base = resolve_output_dir(constants)
    runs = []
    for value in values:
        c = {**constants, name: value, "OUTPUT_DIR": f"{base}_{short}{value:g}"}
        runs.append((c, distill(c, table=False)))
    c = inherit_teacher_data(runs[0][0])
    teacher = load_teacher(c["TEACHER_CHECKPOINT"], c)
    rows = [(f"student {s['model']} {short}={c_run[name]:g}", s, Path(c_run["OUTPUT_DIR"])) for c_run, s in runs]
    if is_main_process():
        print(comparison_table(resolve_data_constants(c), rows, teacher, runs[0][1].get("teacher_val") or {},
                               cost=bool(c.get("COST_TABLE", True))))
    return [s for _, s in runs]


def check_resumed_teacher(c: dict, teacher: Teacher) -> None:
    """RESUME=1 with another teacher file than the run started with would mix two distillations."""
    previous = Path(c["OUTPUT_DIR"]) / "summary.json"
    if not c.get("RESUME") or not previous.is_file():
        return
    recorded = json.loads(previous.read_text()).get("teacher_sha256")
    if recorded and recorded != teacher.sha256:
        raise CheckpointError(f"RESUME=1 but {teacher.path} is not the teacher this run started with "
                         f"(sha256 {teacher.sha256[:12]}... vs {recorded[:12]}... in {previous})")


def check_resumed_methods(c: dict, methods: KDMethods) -> None:
    """RESUME=1 with other distillation methods than the run started with would mix two objectives (and an
    adapter that last.pt does not hold)."""
    previous = Path(c["OUTPUT_DIR"]) / "summary.json"
    if not c.get("RESUME") or not previous.is_file():
        return
    recorded = json.loads(previous.read_text()).get("kd_methods") or asdict(KDMethods())
    changed = [f"{METHOD_CONSTANTS[f]}: {recorded.get(f)!r} -> {value!r}" for f, value in asdict(methods).items()
               if f in recorded and recorded[f] != value]
    if changed:
        raise ConfigError(f"RESUME=1 with other distillation methods than {previous} records: {'; '.join(changed)}; "
                          f"resume with the run's own KD_* constants or start a new OUTPUT_DIR")


# --------------------------------------------------------------------------------------- comparison

def _same_path(a, b) -> bool:
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def validation_identity(c: dict, data: dict | None = None) -> dict:
    """What defines a run's validation items (and the data its student learnt from): data root, format, bands,
    image size, normalization and, for the KOMPSAT-5 layout, the list files (two folds share DATA_ROOT).
    `data`: the run's recorded data settings (summary.json), else those the constants give now."""
    c = resolve_data_constants(c)
    data = plain(data if data is not None else data_settings(c))
    root = Path(str(c["DATA_ROOT"])).expanduser().resolve()
    identity = {"DATA_ROOT": str(root), **{key: value for key, value in data.items() if key in DATA_SETTING_KEYS}}
    if c["DATA_FORMAT"] == "kompsat5":
        identity.update({name: str((root / str(c[name])).resolve()) for name in ("TRAIN_LIST", "VAL_LIST")})
    return identity


DATA_SETTING_KEYS = ("format", "train_bands", "val_bands", "image_size", "normalization", "calibration_db")


def matched_on(c: dict) -> str:
    """The table's note on why the student-alone run is comparable."""
    lists = f", TRAIN_LIST {c['TRAIN_LIST']}, VAL_LIST {c['VAL_LIST']}" if c["DATA_FORMAT"] == "kompsat5" else ""
    return (f"same student and arguments, EPOCHS {c['EPOCHS']}, DATA_ROOT {c['DATA_ROOT']} ({c['DATA_FORMAT']}){lists}, "
            f"bands, image size and normalization")


def find_scratch_run(c: dict, name: str, args: dict, search: list[Path] | None = None) -> Path | None:
    """The newest summary.json of a plain (not distilled) run of the same student for the same EPOCHS, trained
    and validated on the same items (validation_identity: on the KOMPSAT-5 layout the same list files, so
    another fold of the same DATA_ROOT does not match), under runs/ and beside OUTPUT_DIR."""
    output_dir = Path(c["OUTPUT_DIR"])
    folders = search if search is not None else list(dict.fromkeys([Path("runs"), output_dir.parent]))
    wanted = full_args(name, args)
    identity = validation_identity(c)
    found = []
    for folder in folders:
        for path in Path(folder).glob("*/summary.json"):
            if _same_path(path.parent, output_dir):
                continue
            try:
                run = json.loads(path.read_text())
                matches = (run.get("teacher_checkpoint") is None and run["model"] == name
                           and full_args(name, run["model_args"]) == wanted and run["constants"]["EPOCHS"] == c["EPOCHS"]
                           and validation_identity({**run["constants"], "DATA_ROOT": run["data"]["root"]},
                                                   run["data"]) == identity)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if matches:
                found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def mean_epoch_time(run_dir: Path) -> float | None:
    try:
        with open(run_dir / "history.csv", newline="") as handle:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return None
    return sum(times) / len(times) if times else None


def comparison_table(c: dict, summary: dict | list[tuple[str, dict, Path]], teacher: Teacher, teacher_val: dict,
                     cost: bool = True) -> str:
    """Teacher, distilled student(s), the same student trained alone (when such a run exists) and the
    threshold baseline (when the student's summary holds one): per-band validation IoU, parameters held and
    used, the used-parameter ratio to the teacher, and with `cost` GFLOPs per patch and CPU latency at batch
    1 and 32. `summary` is one distilled run's summary, or (label, summary, run folder) rows of a sweep."""
    bands = list(c["VAL_BANDS"])
    size = int(c["IMAGE_SIZE"])
    students = summary if isinstance(summary, list) else [
        (f"student {summary['model']} distilled", summary, Path(c["OUTPUT_DIR"]))]
    first = students[0][1]
    name, args = first["model"], first["model_args"]
    scratch_path = find_scratch_run(c, name, args)
    scratch = json.loads(scratch_path.read_text()) if scratch_path else None
    t_used = teacher.parameters["used"]

    header = ["run", *[f"IoU {b}" for b in bands], "IoU mean", "params held", "params used", "used/teacher"]
    if cost:
        header += ["GFLOPs", "ms b1", "ms b32"]
    header.append("s/epoch")
    rows = []
    costs: dict[str, dict] = {}

    def cost_of(key: str, build) -> dict:
        if key not in costs:
            costs[key] = model_cost(build(), size)
        return costs[key]

    def row(label, ious, params, seconds, measured=None):
        cells = [label, *[f"{v:.3f}" if isinstance(v, (int, float)) else "-" for v in ious]]
        if params:
            cells += [f"{params['held']:,}", f"{params['used']:,}", f"{params['used'] / max(t_used, 1):.2f}x"]
        else:
            cells += ["-", "-", "-"]
        if cost:
            cells += ([f"{measured['gflops']:.3g}", f"{measured['latency_ms_b1']:.1f}", f"{measured['latency_ms_b32']:.1f}"]
                      if measured else ["-", "-", "-"])
        cells.append(f"{seconds:.1f}" if seconds is not None else "-")
        rows.append(cells)

    def student_measured(run: dict):
        if not cost:
            return None
        key = json.dumps([run["model"], run["model_args"]], sort_keys=True, default=str)
        return cost_of(key, lambda: build_model(run["model"], run["model_args"]))

    row(f"teacher {teacher.name}", [teacher_val.get(f"iou_{b}") for b in bands] + [teacher_val.get("iou")],
        teacher.parameters, mean_epoch_time(teacher.path.parent),
        cost_of("teacher", lambda: teacher.model) if cost else None)
    for label, run, run_dir in students:
        row(label, [run.get(f"val_iou_{b}") for b in bands] + [run.get("val_iou")], run["parameters"],
            mean_epoch_time(run_dir), student_measured(run))
    if scratch:
        row(f"student {name} alone", [scratch.get(f"val_iou_{b}") for b in bands] + [scratch.get("val_iou")],
            scratch["parameters"], mean_epoch_time(scratch_path.parent), student_measured(scratch))
    baseline = first.get("baseline")
    if isinstance(baseline, dict):
        per_band = baseline.get("bands") or {}
        row(f"{baseline.get('method', 'threshold')} baseline (fitted on {baseline.get('fitted_on', '?')})",
            [(per_band.get(b) or {}).get("iou") for b in bands] + [baseline.get("iou")], None, None)

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)  # noqa: E731
                                  for i, (cell, w) in enumerate(zip(cells, widths)))
    lines = [f"Distillation: {c['EPOCHS']} epoch(s) on {c['DATA_ROOT']}; validation IoU at each run's best epoch",
             fmt(header), *[fmt(r) for r in rows]]
    if scratch:
        lines.append(f"student alone: {scratch_path} (matches: {matched_on(c)})")
    else:
        command = train_command(train_script(name), c, args, keys=("EPOCHS",))
        lines.append(f"student alone: not found: train it with `{command}` and run kd.py again for the comparison")
    lines.append(f"used/teacher: parameters used in the forward pass, student / teacher; the teacher holds "
                 f"{teacher.parameters['held']:,} but its forward pass uses {t_used:,}, so the ratio counts used ones")
    if cost:
        lines.append(f"GFLOPs: one forward pass on one {size} x {size} patch (torch.utils.flop_counter); ms b1 / b32: "
                     f"CPU milliseconds per forward pass of a batch of 1 / 32, fp32 eager, {torch.get_num_threads()} "
                     f"thread(s), fastest of a few short runs (benchmark.py measures at length)")
    return "\n".join(lines)
