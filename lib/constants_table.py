"""The one table of the script constants: each constant's type and valid range (CONSTANTS), the defaults a
script may leave out (DEFAULTS) and where a script deliberately differs from them (SCRIPT_DIFFERENCES).

lib/config.py checks a script's values against this table; a value check takes a script value or the text of a
command-line override and returns the typed value, or raises ValueError.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Callable

# KOMPSAT-5 training crops (K5_TRAIN_CROP); lib.data.kompsat5.dataset checks its `crop` argument against the same
# tuple, so a new mode is added in one place
K5_TRAIN_CROPS = ("random", "tiles")

# Defaults for the constants a script may leave out; a script's own constants override these.
# lib/train/engine.py seeds each epoch with SEED * 1_000_003 + epoch, which torch.manual_seed takes only in 64 bits
MAX_SEED = 2**64 // 1_000_003 - 1
# KD_TEMPERATURE: below this the T^2-scaled KD term underflows to zero in float32 (1e-30 trained a "distilled"
# student with no KD at all); above the other bound it overflows
KD_TEMPERATURE_RANGE = (0.01, 1000.0)

DEFAULTS = dict(
    DATA_FORMAT="bands", DATA_ROOT="02_kfold", TRAIN_LIST="train.txt", VAL_LIST="val.txt",
    TRAIN_BANDS=("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), VAL_BANDS=("VV", "VH"), IMAGE_SIZE=256,
    NORMALIZATION="sar", PRELOAD="auto", AUGMENT=True, EPOCHS=40, BATCH_SIZE=32, LR=5e-4, WEIGHT_DECAY=1e-4,
    WARMUP_EPOCHS=3, PLATEAU_PATIENCE=10, PLATEAU_FACTOR=0.5, PATIENCE=20, SEED=42, FTL_ALPHA=0.30, FTL_BETA=0.70,
    FTL_GAMMA=0.75, BCE_WEIGHT=0.0, DEVICE="auto", PRECISION="auto", CHANNELS_LAST="auto", COMPILE="auto", NUM_WORKERS="auto",
    SYNC_BN=False, OUTPUT_DIR=None, RESUME=False, OVERWRITE=False, ENCODER_WEIGHTS=None, PROGRESS=True,
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
    "train_pspmixer.py": {"OUTPUT_DIR": "its own runs/<model> folder",
                          "BCE_WEIGHT": "0.5: without BatchNorm, PSPMixer alone never leaves all water under Focal "
                                        "Tversky alone (docs/distillation-methods.md#students-that-learn-alone)"},
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
    "SEED": Spec(integer(0, MAX_SEED), f"an integer from 0 to {MAX_SEED} (each epoch's seed must fit in 64 bits)"),
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
    "OVERWRITE": BOOL,
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
    "REFINE": Spec(integer(0), "an integer >= 0 (0: off; else the width of the full-resolution refinement)"),
    "MIXER_ACTIVATION": Spec(one_of("gelu", "relu"), "gelu or relu (relu: int8-friendly)"),
    "MIXER_NORM": Spec(one_of("layer", "batch"), "layer or batch (batch: folded away at export, int8-friendly)"),
    # KOMPSAT-5 (DATA_FORMAT=kompsat5)
    "CALIBRATION_DB": Spec(number(), "a finite number (dB)"),
    "K5_TRAIN_CROP": Spec(one_of(*K5_TRAIN_CROPS), " or ".join(K5_TRAIN_CROPS)),
    "K5_CROPS_PER_SCENE": Spec(integer(1), "an integer >= 1"),
    # distillation (kd.py)
    "TEACHER_CHECKPOINT": Spec(text, "a checkpoint path"),
    "STUDENT": Spec(architecture, architectures),
    "STUDENT_ARGS": Spec(literal_dict, "a dict of keyword arguments of the student, e.g. STUDENT_ARGS=\"{'width': 8}\"",
                         none="PATCH/HIDDEN/... for PSPMixer, the architecture's own defaults otherwise"),
    "KD_TEMPERATURE": Spec(number(*KD_TEMPERATURE_RANGE), "a number from {:g} to {:g} (outside, the KD term underflows "
                           "to zero or overflows)".format(*KD_TEMPERATURE_RANGE)),
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
