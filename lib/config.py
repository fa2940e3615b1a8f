"""UPPER_CASE constants of a script, their command-line overrides (`NAME=value`), and the one table that
gives each constant its type and valid range.

A script keeps its hyperparameters as module constants (nanoGPT style). `load_constants(globals())`
collects them, applies `NAME=value` arguments from the command line, and checks every value against
CONSTANTS before any work starts: an unknown name, a value of the wrong type or out of range is one
ConfigError naming the constant, the value and what is allowed (lib/cli.py prints it as `error: ...`).
The values it returns are typed ("0" -> False, "3" -> 3, "VV,VH" -> ("VV", "VH")); the placeholders that
depend on the machine ("auto" devices, workers, precision) are resolved by lib/runtime.py from these typed
values, and `with_defaults` / `resolve_constants` complete a run's constants with DEFAULTS in one place.
"""
from __future__ import annotations

import ast
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from lib.errors import ConfigError

# KOMPSAT-5 training crops (K5_TRAIN_CROP); lib.data.kompsat5.dataset checks its `crop` argument against the same
# tuple, so a new mode is added in one place
K5_TRAIN_CROPS = ("random", "tiles")

# Defaults for the constants a script may leave out; a script's own constants override these.
DEFAULTS = dict(
    DATA_FORMAT="bands", DATA_ROOT="02_kfold", TRAIN_LIST="train.txt", VAL_LIST="val.txt",
    TRAIN_BANDS=("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), VAL_BANDS=("VV", "VH"), IMAGE_SIZE=256,
    NORMALIZATION="sar", PRELOAD="auto", AUGMENT=True, EPOCHS=40, BATCH_SIZE=32, LR=5e-4, WEIGHT_DECAY=1e-4,
    WARMUP_EPOCHS=3, PLATEAU_PATIENCE=10, PLATEAU_FACTOR=0.5, PATIENCE=20, SEED=42, FTL_ALPHA=0.30, FTL_BETA=0.70,
    FTL_GAMMA=0.75, BCE_WEIGHT=0.0, DEVICE="auto", PRECISION="auto", CHANNELS_LAST="auto", COMPILE="auto", NUM_WORKERS="auto",
    SYNC_BN=False, OUTPUT_DIR=None, RESUME=False, ENCODER_WEIGHTS=None, PROGRESS=True,
    INPUT_BANDS=None, SAR_OFFSET_DB=0.0, INIT_CHECKPOINT=None,
)

# Where a script deliberately differs from DEFAULTS, and why (tests/core/test_constants.py holds every script to
# DEFAULTS except these). OUTPUT_DIR: each script writes its own runs/<model> folder.
KOMPSAT5_SCRIPT = {"TRAIN_LIST": "the published KOMPSAT-5 layout (train_full/ list files)",
                   "VAL_LIST": "the published KOMPSAT-5 layout (train_full/ list files)",
                   "BATCH_SIZE": "16 crops of 256^2 hold the pixels of one 1024^2 scene, as the published runs fed",
                   "OUTPUT_DIR": "its own runs/<model> folder"}
SCRIPT_DIFFERENCES = {
    "train_unet.py": {"ENCODER_WEIGHTS": "ImageNet weights for the pretrained MobileNetV2 encoder",
                      "OUTPUT_DIR": "its own runs/<model> folder"},
    "train_pspnet.py": {"ENCODER_WEIGHTS": "ImageNet weights for the pretrained MobileNetV2 encoder",
                        "OUTPUT_DIR": "its own runs/<model> folder"},
    "train_mlp256.py": {"OUTPUT_DIR": "its own runs/<model> folder"},
    "train_unetlight.py": {"OUTPUT_DIR": "its own runs/<model> folder"},
    "train_pspmixer.py": {"OUTPUT_DIR": "its own runs/<model> folder"},
    "train_hrnet.py": KOMPSAT5_SCRIPT,
    "train_deepunet.py": KOMPSAT5_SCRIPT,
    "train_unet_classic.py": KOMPSAT5_SCRIPT,
    "train_fcn_vgg16.py": KOMPSAT5_SCRIPT,
    "train_fcn_vgg19.py": KOMPSAT5_SCRIPT,
    "kd.py": {"TRAIN_BANDS": "None: the teacher's, so that `python kd.py` distils whatever teacher was trained",
              "VAL_BANDS": "None: the teacher's", "IMAGE_SIZE": "None: the teacher's",
              "NORMALIZATION": "None: the teacher's range table (sar or published)"},
}


# ------------------------------------------------------------------------------------- value checks
# Each check takes a script value or the text of a command-line override and returns the typed value,
# or raises ValueError; the Spec's `allowed` says what is accepted.

TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError


def to_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError


def to_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    return float(value)


def integer(low: int | None = None, high: int | None = None) -> Callable:
    def check(value):
        number = to_int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError
        return number
    return check


def number(low: float | None = None, high: float | None = None, low_open=False, high_open=False) -> Callable:
    """A finite float within [low, high] (an open end excludes the bound); NaN and infinities are refused."""
    def check(value):
        x = to_float(value)
        if not math.isfinite(x):
            raise ValueError
        if low is not None and (x < low or (low_open and x == low)):
            raise ValueError
        if high is not None and (x > high or (high_open and x == high)):
            raise ValueError
        return x
    return check


def one_of(*options: str) -> Callable:
    def check(value):
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ValueError
    return check


def auto_or(inner: Callable) -> Callable:
    """"auto", or a value `inner` accepts."""
    def check(value):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return inner(value)
    return check


def text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def bands(value) -> tuple[str, ...]:
    from lib.data.bands import BAND_RANGES
    names = split_list(value)
    if not names or not all(isinstance(n, str) and n in BAND_RANGES for n in names):
        raise ValueError
    return tuple(names)


def input_bands(value) -> tuple[str, ...]:
    """INPUT_BANDS: "VV+VH" (or "VV,VH") -> ("VV", "VH"), each a known band, none twice."""
    names = bands(value.replace("+", ",") if isinstance(value, str) else value)
    if len(set(names)) != len(names):
        raise ValueError
    return names


def positive_ints(value) -> tuple[int, ...]:
    items = split_list(value)
    if not items:
        raise ValueError
    return tuple(integer(1)(item) for item in items)


def split_list(value) -> list:
    """A tuple/list, or its command-line text: a Python literal "('VV', 'VH')" or "VV,VH"."""
    if isinstance(value, str):
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            literal = [item.strip() for item in value.split(",") if item.strip()]
        value = literal if isinstance(literal, (tuple, list)) else [literal]
    if not isinstance(value, (tuple, list)):
        raise ValueError
    return list(value)


def literal_dict(value) -> dict:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError from None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError
    return value


def device(value) -> str:
    """cpu, cuda, cuda:N or mps; a CUDA device where CUDA is not available is refused here, before any work."""
    import torch
    name = text(value).strip().lower()
    try:
        parsed = torch.device(name)
    except RuntimeError:
        raise ValueError from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableDevice(f"{name} but CUDA is not available here; use DEVICE=cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UnavailableDevice(f"{name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


class UnavailableDevice(ValueError):
    """A well-formed device this machine does not have (the message says so)."""


def architecture(value) -> str:
    from lib.models.factory import MODELS
    if isinstance(value, str) and value in MODELS:
        return value
    raise ValueError


def architectures() -> str:
    from lib.models.factory import MODELS
    return "an architecture of lib.models.factory; available: " + ", ".join(MODELS)


def known_bands() -> str:
    from lib.data.bands import BAND_RANGES
    return ("a non-empty list of bands with a normalization range in lib/data/bands.py BAND_RANGES: "
            + ", ".join(BAND_RANGES))


@dataclass(frozen=True)
class Spec:
    """Type and range of one constant. `none`: what None means (None is refused where it is empty);
    `none_if_default`: None is accepted only where the script's own default is None."""
    check: Callable[[Any], Any]
    allowed: str | Callable[[], str]
    none: str = ""
    none_if_default: bool = False

    def describe(self) -> str:
        allowed = self.allowed() if callable(self.allowed) else self.allowed
        return allowed + (f"; or None: {self.none}" if self.none else "")


SWITCH = Spec(auto_or(to_bool), "auto, true or false (1/0)")
BOOL = Spec(to_bool, "a boolean: 1/0, true/false")
TEACHERS = "the teacher checkpoint's (kd.py only)"

# Every constant of every train script and kd.py: its type and what is allowed.
CONSTANTS: dict[str, Spec] = {
    # data
    "DATA_FORMAT": Spec(one_of("bands", "kompsat5"), "bands or kompsat5"),
    "DATA_ROOT": Spec(text, "a folder path"),
    "TRAIN_LIST": Spec(text, "a list file path relative to DATA_ROOT"),
    "VAL_LIST": Spec(text, "a list file path relative to DATA_ROOT"),
    "TRAIN_BANDS": Spec(bands, known_bands, none=TEACHERS, none_if_default=True),
    "VAL_BANDS": Spec(bands, known_bands, none=TEACHERS, none_if_default=True),
    "IMAGE_SIZE": Spec(integer(8), "an integer >= 8 (pixels)", none=TEACHERS, none_if_default=True),
    "NORMALIZATION": Spec(one_of("sar", "published"), "sar or published (lib/data/bands.py NORMALIZATIONS)",
                          none=TEACHERS, none_if_default=True),
    "INPUT_BANDS": Spec(input_bands, lambda: "bands joined by +, e.g. VV+VH, stacked as input channels; " + known_bands(),
                        none="one band per sample, drawn from TRAIN_BANDS (band-agnostic, the published recipe)"),
    "PRELOAD": SWITCH,
    "AUGMENT": BOOL,
    "SAR_OFFSET_DB": Spec(number(0), "a finite number >= 0 (dB; 0: RandomBrightnessContrast, the published augmentation)"),
    # optimization
    "EPOCHS": Spec(integer(1), "an integer >= 1"),
    "BATCH_SIZE": Spec(integer(1), "an integer >= 1"),
    "LR": Spec(number(0, low_open=True), "a finite number > 0"),
    "WEIGHT_DECAY": Spec(number(0), "a finite number >= 0"),
    "WARMUP_EPOCHS": Spec(integer(0), "an integer >= 0"),
    "PLATEAU_PATIENCE": Spec(integer(0), "an integer >= 0"),
    "PLATEAU_FACTOR": Spec(number(0, 1, low_open=True, high_open=True), "a number between 0 and 1 (exclusive)"),
    "PATIENCE": Spec(integer(1), "an integer >= 1"),
    "SEED": Spec(integer(0), "an integer >= 0"),
    # loss
    "FTL_ALPHA": Spec(number(0), "a finite number >= 0"),
    "FTL_BETA": Spec(number(0), "a finite number >= 0"),
    "FTL_GAMMA": Spec(number(0, low_open=True), "a finite number > 0"),
    "BCE_WEIGHT": Spec(number(0), "a finite number >= 0"),
    # system
    "DEVICE": Spec(auto_or(device), "auto, cpu, cuda, cuda:N or mps"),
    "PRECISION": Spec(one_of("auto", "fp32", "fp16", "bf16"), "auto, fp32, fp16 or bf16"),
    "CHANNELS_LAST": SWITCH,
    "COMPILE": SWITCH,
    "NUM_WORKERS": Spec(auto_or(integer(0)), "auto or an integer >= 0"),
    "SYNC_BN": BOOL,
    "OUTPUT_DIR": Spec(text, "a folder path", none="runs/<model name lowercased>"),
    "RESUME": BOOL,
    "ENCODER_WEIGHTS": Spec(text, "imagenet or a path to a local encoder state-dict file",
                            none="random initialization"),
    "PROGRESS": BOOL,
    "INIT_CHECKPOINT": Spec(text, "a checkpoint path (best.pt or last.pt of the same architecture)",
                            none="the architecture's own initialization"),
    # model: smp encoders (train_unet.py, train_pspnet.py)
    "ENCODER_NAME": Spec(text, "an encoder name of segmentation-models-pytorch, e.g. mobilenet_v2"),
    "ENCODER_DEPTH": Spec(integer(1, 5), "an integer from 1 to 5"),
    # model: MLP_256, UnetLight, DeepUNet, UNetClassic, FCN, HRNet
    "WIDTHS": Spec(positive_ints, "a non-empty list of integers >= 1, e.g. 128,64,32,16"),
    "DROPOUT": Spec(number(0, 1, high_open=True), "a number >= 0 and < 1"),
    "WIDTH": Spec(integer(1), "an integer >= 1"),
    "BASE_CHANNELS": Spec(integer(1), "an integer >= 1"),
    "BATCH_NORM": BOOL,
    "FC_WIDTH": Spec(integer(1), "an integer >= 1"),
    "FC_KERNEL": Spec(integer(1), "an integer >= 1"),
    "HRNET_VARIANT": Spec(text, "a timm hrnet name, e.g. hrnet_w18"),
    # model: PSPMixer (train_pspmixer.py, kd.py's student)
    "PATCH": Spec(integer(1), "an integer >= 1 that divides IMAGE_SIZE"),
    "HIDDEN": Spec(integer(1), "an integer >= 1"),
    "DEPTH": Spec(integer(1), "an integer >= 1"),
    "TOKENS_MLP": Spec(integer(1), "an integer >= 1", none="HIDDEN"),
    "CHANNELS_MLP": Spec(integer(1), "an integer >= 1", none="2 * HIDDEN"),
    # KOMPSAT-5 (DATA_FORMAT=kompsat5)
    "CALIBRATION_DB": Spec(number(), "a finite number (dB)"),
    "K5_TRAIN_CROP": Spec(one_of(*K5_TRAIN_CROPS), " or ".join(K5_TRAIN_CROPS)),
    "K5_CROPS_PER_SCENE": Spec(integer(1), "an integer >= 1"),
    # distillation (kd.py)
    "TEACHER_CHECKPOINT": Spec(text, "a checkpoint path"),
    "STUDENT": Spec(architecture, architectures),
    "STUDENT_ARGS": Spec(literal_dict, "a dict of keyword arguments of the student, e.g. STUDENT_ARGS=\"{'width': 8}\"",
                         none="PATCH/HIDDEN/... for PSPMixer, the architecture's own defaults otherwise"),
    "KD_TEMPERATURE": Spec(number(0, low_open=True), "a finite number > 0"),
    "KD_ALPHA": Spec(number(0), "a finite number >= 0"),
    "KD_BETA": Spec(number(0), "a finite number >= 0"),
    # added distillation methods (kd.py, docs/distillation-methods.md): weights, 0 = off
    "KD_FEATURE": Spec(number(0), "a finite number >= 0 (0: off)"),
    "KD_FEATURE_LOSS": Spec(one_of("mse", "cosine"), "mse or cosine"),
    "KD_FEATURE_STUDENT_LAYER": Spec(text, "a module name of the student, or 'name:input'", none="the architecture's default"),
    "KD_FEATURE_TEACHER_LAYER": Spec(text, "a module name of the teacher, or 'name:input'", none="the architecture's default"),
    "KD_CWD": Spec(number(0), "a finite number >= 0 (0: off)"),
    "KD_AFFINITY": Spec(number(0), "a finite number >= 0 (0: off)"),
    "KD_AFFINITY_GRID": Spec(integer(1), "an integer >= 1"),
    "COST_TABLE": BOOL,
}


def strip_quotes(value):
    """'"runs/x"' -> 'runs/x': quotes that reached the value (a shell that kept them) are not part of it."""
    if isinstance(value, str):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" and value[0] not in value[1:-1]:
            return value[1:-1]
    return value


def check_value(name: str, value: Any, default: Any = None) -> Any:
    """The typed value of constant `name`; a ConfigError naming the constant, the value and what is allowed.
    `default` is the script's own value (it decides whether None is accepted where `none_if_default`)."""
    spec = CONSTANTS[name]
    value = strip_quotes(value)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if spec.none and (not spec.none_if_default or default is None):
            return None
        allowed = spec.allowed() if callable(spec.allowed) else spec.allowed
        where = f"accepted only where the script's own default is None: {spec.none}" if spec.none else "not allowed here"
        raise ConfigError(f"{name}=None: expected {allowed} (None is {where})")
    try:
        return spec.check(value)
    except UnavailableDevice as error:
        raise ConfigError(f"{name}={error}") from None
    except (ValueError, TypeError, SyntaxError):
        raise ConfigError(f"{name}={value!r}: expected {spec.describe()}") from None


def check_constants(c: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                    skip: Sequence[str] = ()) -> dict[str, Any]:
    """`c` with every constant of the table checked and typed (others, and `skip`, are kept as they are),
    then the checks between constants. `defaults`: the script's own values (for where None is accepted)."""
    defaults = c if defaults is None else defaults
    result = {name: check_value(name, value, defaults.get(name)) if name in CONSTANTS and name not in skip else value
              for name, value in c.items()}
    patch, size = result.get("PATCH"), result.get("IMAGE_SIZE")
    if isinstance(patch, int) and isinstance(size, int) and size % patch:
        divisors = [str(p) for p in range(1, min(size, 64) + 1) if size % p == 0]
        raise ConfigError(f"PATCH={patch}: expected an integer >= 1 that divides IMAGE_SIZE={size}, "
                          f"e.g. {', '.join(divisors[-4:])}")
    return result


def with_defaults(c: Mapping[str, Any]) -> dict[str, Any]:
    """`c` completed with DEFAULTS, unchecked (for constants recorded in a checkpoint, which may name a device
    this machine lacks): the one place the defaults are merged."""
    return {**DEFAULTS, **c}


def resolve_constants(c: Mapping[str, Any]) -> dict[str, Any]:
    """A run's constants completed with DEFAULTS and checked (the engine's second line behind load_constants,
    for callers that pass a dict). DEVICE is left to lib.runtime.resolve_device, which checks it where it is
    used; None is accepted wherever the table gives it a meaning (kd.py fills the teacher's first)."""
    c = with_defaults(c)
    return check_constants(c, c, skip=("DEVICE",))


# --------------------------------------------------------------------------------- script constants

def script_constants(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE plain-data constants of a script's namespace, in definition order."""
    plain = (bool, int, float, str, tuple, list, dict, type(None))
    return {name: value for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and isinstance(value, plain)}


def parse_value(name: str, text: str, default: Any) -> Any:
    """Convert `text` to the type of constant `name`: by the table where it lists the name, else by the type
    of `default` (None defaults accept None, numbers or strings)."""
    if name in CONSTANTS:
        return check_value(name, text, default)
    text = strip_quotes(text)
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(default, bool):
        try:
            return to_bool(lowered)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected a boolean (1/0, true/false)") from None
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected an integer, e.g. {name}={default}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected a number, e.g. {name}={default}") from None
    if isinstance(default, (tuple, list)):
        return type(default)(split_list(text))
    if isinstance(default, dict):
        try:
            return literal_dict(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected a Python dict literal") from None
    if default is None:  # optional value: guess a number, else keep the string
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return text


def apply_overrides(constants: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `constants` with every `NAME=value` of `argv` applied."""
    result = dict(constants)
    for arg in argv:
        if arg in ("-h", "--help"):
            raise SystemExit(describe(constants))
        name, sep, text_value = arg.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise ConfigError(f"cannot read argument {arg!r}: expected NAME=value, e.g. EPOCHS=2")
        if name not in constants:
            raise ConfigError(f"unknown constant {name!r}. Valid names: {', '.join(constants)}")
        result[name] = parse_value(name, text_value, constants[name])
    return result


def describe(constants: Mapping[str, Any]) -> str:
    lines = ["Constants (override any as NAME=value):"]
    for name, value in constants.items():
        allowed = f"  # {CONSTANTS[name].describe()}" if name in CONSTANTS else ""
        lines.append(f"  {name} = {value!r}{allowed}")
    return "\n".join(lines)


def load_constants(namespace: Mapping[str, Any], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The script's constants with command-line overrides, every value checked and typed; a ConfigError
    (reported by lib.cli.run as one `error:` line) on the first that is not allowed."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = script_constants(namespace)
    return check_constants(apply_overrides(defaults, argv), defaults)
