"""Teacher and student of a distillation run (kd.py).

The teacher is rebuilt from its checkpoint alone (lib.checkpoint.load_model), checked against the
student's data settings and frozen. The student is any architecture of lib.models.factory: PSPMixer takes its
arguments from kd.py's PATCH/HIDDEN/DEPTH/TOKENS_MLP/CHANNELS_MLP, every other architecture its own
defaults (plus image_size where it takes one); STUDENT_ARGS, a dict, is applied on top of either.
"""
from __future__ import annotations

import ast
import inspect
import shlex
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lib.data.bands import CUSTOM_NORMALIZATION, NORMALIZATIONS, recorded_normalization_name
from lib.checkpoint import CheckpointError, file_sha256, model_from_checkpoint, plain, read_checkpoint
from lib.config import DEFAULTS, Constants, as_constants, check_value
from lib.data.factory import RECORDED_ONLY, data_settings
from lib.models.factory import MODELS, parameter_counts

ROOT = Path(__file__).resolve().parents[1]
TEACHER_TRAIN_COMMAND = "python train_pspnet.py"
# PSPMixer argument -> kd.py constant (the same names train_pspmixer.py uses)
PSPMIXER_CONSTANTS = {"patch": "PATCH", "hidden": "HIDDEN", "depth": "DEPTH", "tokens_mlp": "TOKENS_MLP",
                      "channels_mlp": "CHANNELS_MLP", "refine": "REFINE", "activation": "MIXER_ACTIVATION",
                      "norm": "MIXER_NORM"}
_MISSING = "<missing>"


class TeacherError(CheckpointError):
    """A teacher checkpoint that cannot be used for this student; the message says why and what to do."""


# ------------------------------------------------------------------------------------------- student

def student_args(c: Constants | dict) -> dict:
    """Keyword arguments of the student c["STUDENT"] built from the constants `c`."""
    c = as_constants(c)  # typed once: an unknown STUDENT or a malformed STUDENT_ARGS is a ConfigError, never dropped
    name = c["STUDENT"]
    if name == "PSPMixer":
        args = {"image_size": int(c["IMAGE_SIZE"]), **{arg: c[const] for arg, const in PSPMIXER_CONSTANTS.items()}}
    else:
        args = {"image_size": int(c["IMAGE_SIZE"])} if "image_size" in constructor_defaults(name) else {}
    args.update(c.get("STUDENT_ARGS") or {})
    return args


def constructor_defaults(name: str) -> dict:
    """Keyword defaults of the constructor of architecture `name`."""
    try:
        signature = inspect.signature(MODELS[name])
    except (TypeError, ValueError):
        return {}
    return {key: p.default for key, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def full_args(name: str, args: dict | None) -> dict:
    """`args` with every constructor default filled in (plain types), so that {} and {"width": 16} of a
    UnetLight compare equal."""
    return plain({**constructor_defaults(name), **(args or {})})


# ------------------------------------------------------------------------------------------- teacher

@dataclass
class Teacher:
    model: nn.Module          # frozen, eval mode, on the CPU until the objective moves it
    path: Path
    sha256: str
    name: str
    args: dict
    parameters: dict          # {"held": ..., "used": ...}
    data: dict                # checkpoint["data"]

    def info(self) -> dict:
        """What summary.json records of the teacher."""
        return {"teacher_checkpoint": str(self.path), "teacher_sha256": self.sha256,
                "teacher_model": {"name": self.name, "args": plain(self.args)}, "teacher_parameters": self.parameters}


def freeze(model: nn.Module) -> nn.Module:
    """No parameter takes a gradient; eval mode (BatchNorm running statistics stay as trained)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def missing_teacher_message(path: Path, c: dict) -> str:
    overrides = {"OUTPUT_DIR": str(path.parent)} if path.name == "best.pt" and path.parent != Path("runs/pspnet") else {}
    command = train_command("train_pspnet.py", c, overrides=overrides)
    return (f"teacher checkpoint {path} not found. Train the teacher first: `{command}` "
            f"(it writes {path.parent / 'best.pt'} when trained with these data constants), "
            f"or point TEACHER_CHECKPOINT at any trained best.pt")


def pairing_problems(teacher_data: dict, student_data: dict) -> list[str]:
    """Differences between the data settings a teacher was trained with and the student's, one line per key."""
    problems = []
    for key in dict.fromkeys([*student_data, *teacher_data]):
        if key in RECORDED_ONLY:  # the normalization table it names is compared
            continue
        theirs, ours = plain(teacher_data.get(key, _MISSING)), plain(student_data.get(key, _MISSING))
        if theirs == ours:
            continue
        if isinstance(theirs, dict) and isinstance(ours, dict):  # normalization table: name the bands that differ
            bands = [b for b in dict.fromkeys([*ours, *theirs]) if theirs.get(b, _MISSING) != ours.get(b, _MISSING)]
            detail = "; ".join(f"{b}: teacher {theirs.get(b, _MISSING)} vs student {ours.get(b, _MISSING)}" for b in bands)
            problems.append(f"{key} differs ({detail})")
        else:
            problems.append(f"{key}: teacher {theirs!r} vs student {ours!r}")
    return problems


def check_pairing(checkpoint: dict, c: dict, path: Path | str) -> None:
    """The teacher must have been trained on input prepared as the student's: same data settings
    (format, bands, normalization table, image size); otherwise a TeacherError names every difference."""
    teacher_data = checkpoint.get("data")
    if not isinstance(teacher_data, dict):
        raise TeacherError(f"teacher {path}: the checkpoint records no data settings, so it cannot be paired "
                           f"with a student; retrain it with `{TEACHER_TRAIN_COMMAND}`")
    problems = pairing_problems(teacher_data, data_settings(c))
    if problems:
        script = train_script(str(checkpoint.get("model", {}).get("name", "PSPNet")))
        command = train_command(script if (ROOT / script).is_file() else "train_pspnet.py", c)
        raise TeacherError(f"teacher {path} was trained on differently prepared input than this student would "
                           f"get: " + "; ".join(problems) + ". Set the student's constants to the teacher's "
                           f"(e.g. TRAIN_BANDS, VAL_BANDS, IMAGE_SIZE) or train a teacher with these: `{command}`")


@dataclass(frozen=True)
class TeacherFile:
    """TEACHER_CHECKPOINT read once per kd.py run (content and sha256) and passed on to everything that needs it:
    the inherited data settings, the teacher model of every run of a sweep, the final table."""
    path: Path
    checkpoint: dict | None   # None: no file there yet (kd.py then says how to train the teacher)
    sha256: str | None

    @classmethod
    def read(cls, path: Path | str) -> "TeacherFile":
        path = Path(path)
        if not path.is_file():
            return cls(path, None, None)
        return cls(path, read_checkpoint(path), file_sha256(path))

    @property
    def data(self) -> dict:
        return (self.checkpoint or {}).get("data") or {}


# kd.py constant -> key of checkpoint["data"]; None in kd.py means "as the teacher was trained"
INHERITED_DATA = {"TRAIN_BANDS": "train_bands", "VAL_BANDS": "val_bands", "IMAGE_SIZE": "image_size"}


def needs_teacher_data(c) -> bool:
    return any(c.get(name) is None for name in (*INHERITED_DATA, "NORMALIZATION"))


def inherited_values(c, teacher: TeacherFile) -> dict:
    """{constant: value} for each of TRAIN_BANDS, VAL_BANDS, IMAGE_SIZE and NORMALIZATION that is None in `c`: the
    teacher checkpoint's recorded data settings (the train scripts' defaults when there is no teacher file yet),
    so that `python kd.py` distils whatever teacher was trained. A value given explicitly is kept, and
    check_pairing still refuses it when it differs from the teacher's."""
    values, data = {}, teacher.data
    for name, key in INHERITED_DATA.items():
        if c.get(name) is None:
            value = data.get(key, DEFAULTS[name])
            values[name] = int(value) if name == "IMAGE_SIZE" else tuple(value)
    if c.get("NORMALIZATION") is None:  # the teacher's range table by name ("sar" when there is no teacher yet)
        name = recorded_normalization_name(data) if data else DEFAULTS["NORMALIZATION"]
        if name == CUSTOM_NORMALIZATION:
            raise TeacherError(f"teacher {teacher.path}: its normalization table {data.get('normalization')} is none of "
                               f"lib/data/bands.py NORMALIZATIONS ({', '.join(NORMALIZATIONS)}); train the teacher "
                               f"with one of them, or add its table there")
        values["NORMALIZATION"] = name
    return values


def inherit_teacher_data(c: dict, teacher: TeacherFile | None = None) -> dict:
    """`c` (a plain dict) with the values inherited_values takes from the teacher; `teacher`: the file already
    read, else it is read here when a value is None."""
    if teacher is None:
        teacher = TeacherFile.read(c["TEACHER_CHECKPOINT"]) if needs_teacher_data(c) else TeacherFile(Path(), None, None)
    c = {**c, **inherited_values(c, teacher)}
    for name in ("TRAIN_BANDS", "VAL_BANDS"):  # text from a caller that did not load constants: "VV,VH"
        if isinstance(c[name], str):
            c[name] = check_value(name, c[name])
    return c


def load_teacher(path: Path | str, c, teacher: TeacherFile | None = None) -> Teacher:
    """Rebuild, check and freeze the teacher of TEACHER_CHECKPOINT (any trained checkpoint, e.g. a Unet);
    `teacher`: the file already read (TeacherFile.read), else it is read here."""
    path = Path(path)
    teacher = teacher if teacher is not None else TeacherFile.read(path)
    if teacher.checkpoint is None:
        raise TeacherError(missing_teacher_message(path, c))
    checkpoint = teacher.checkpoint
    model = model_from_checkpoint(checkpoint, path)
    check_pairing(checkpoint, c, path)
    counts = parameter_counts(model, int(c["IMAGE_SIZE"]))  # before freezing: "used" needs gradients
    return Teacher(model=freeze(model), path=path, sha256=teacher.sha256, name=checkpoint["model"]["name"],
                   args=checkpoint["model"].get("args") or {}, parameters=counts, data=checkpoint["data"])


# ------------------------------------------------------------------------------ train-script commands

DATA_CONSTANTS = ("DATA_FORMAT", "DATA_ROOT", "TRAIN_LIST", "VAL_LIST", "TRAIN_BANDS", "VAL_BANDS", "IMAGE_SIZE")


def train_script(name: str) -> str:
    """The train script of architecture `name` by the repository's naming (MLP_256 -> train_mlp256.py)."""
    return f"train_{name.lower().replace('_', '')}.py"


def script_defaults(script: Path) -> dict:
    """The UPPER_CASE literal constants of a train script, read without running it."""
    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError):
        return {}
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    constants[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return constants


def value_text(value) -> str:
    """A constant as NAME=value text: a list or tuple comma-separated ("VV,VH")."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def format_value(value) -> str:
    return shlex.quote(value_text(value))


def train_command(script: str, c: dict, args: dict | None = None, keys: tuple = (), overrides: dict | None = None) -> str:
    """`python <script> NAME=value ...` that trains with the model arguments `args` and the data constants
    (plus `keys`) of `c`; only values that differ from the script's own defaults are written."""
    defaults = script_defaults(ROOT / script)
    parts = [f"python {script}"]
    wanted = {**{PSPMIXER_CONSTANTS.get(arg, arg.upper()): value for arg, value in (args or {}).items()},
              **{key: c[key] for key in (*DATA_CONSTANTS, *keys) if key in c}, **(overrides or {})}
    unreachable = []
    for name, value in wanted.items():
        if name not in defaults:
            if name.lower() in (args or {}):
                unreachable.append(f"{name.lower()}={value!r}")
            continue
        if plain(defaults[name]) != plain(value):
            parts.append(f"{name}={format_value(value)}")
    if unreachable and defaults:
        parts.append(f"(and model arguments the script has no constant for: {', '.join(unreachable)})")
    return " ".join(parts)
