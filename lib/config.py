"""UPPER_CASE constants of a script, and their command-line overrides (`NAME=value`).

A script keeps its hyperparameters as module constants (nanoGPT style). `load_constants(globals())`
collects them, applies `NAME=value` arguments from the command line with the type of each default,
and returns a plain dict. An unknown name or a value of the wrong type is a clear error.
"""
from __future__ import annotations

import ast
import sys
from typing import Any, Mapping, Sequence

from lib.errors import ConfigError

# Defaults for the constants a script may leave out; a script's own constants override these.
DEFAULTS = dict(
    DATA_FORMAT="bands", DATA_ROOT="02_kfold", TRAIN_LIST="train.txt", VAL_LIST="val.txt",
    TRAIN_BANDS=("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), VAL_BANDS=("VV", "VH"), IMAGE_SIZE=256,
    NORMALIZATION="sar", PRELOAD="auto", AUGMENT=True, EPOCHS=40, BATCH_SIZE=32, LR=5e-4, WEIGHT_DECAY=1e-4,
    WARMUP_EPOCHS=3, PLATEAU_PATIENCE=10, PLATEAU_FACTOR=0.5, PATIENCE=20, SEED=42, FTL_ALPHA=0.30, FTL_BETA=0.70,
    FTL_GAMMA=0.75, DEVICE="auto", PRECISION="auto", CHANNELS_LAST="auto", COMPILE="auto", NUM_WORKERS="auto",
    SYNC_BN=False, OUTPUT_DIR=None, RESUME=False, ENCODER_WEIGHTS=None, PROGRESS=True,
)


def script_constants(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE plain-data constants of a script's namespace, in definition order."""
    plain = (bool, int, float, str, tuple, list, dict, type(None))
    return {name: value for name, value in namespace.items()
            if name.isupper() and not name.startswith("_") and isinstance(value, plain)}


def parse_value(name: str, text: str, default: Any) -> Any:
    """Convert `text` to the type of `default` (None defaults accept None, numbers or strings)."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(default, bool):
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r}: expected a boolean (1/0, true/false)")
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
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [item.strip() for item in text.split(",") if item.strip()]
        if not isinstance(value, (tuple, list)):
            value = [value]
        return type(default)(value)
    if isinstance(default, dict):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{name}={text!r}: expected a Python dict literal") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={text!r}: expected a Python dict literal")
        return value
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
        name, sep, text = arg.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise ConfigError(f"cannot read argument {arg!r}: expected NAME=value, e.g. EPOCHS=2")
        if name not in constants:
            raise ConfigError(f"unknown constant {name!r}. Valid names: {', '.join(constants)}")
        result[name] = parse_value(name, text, constants[name])
    return result


def describe(constants: Mapping[str, Any]) -> str:
    lines = ["Constants (override any as NAME=value):"]
    lines += [f"  {name} = {value!r}" for name, value in constants.items()]
    return "\n".join(lines)


def load_constants(namespace: Mapping[str, Any], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The script's constants with command-line overrides; exits with a message on a bad override."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return apply_overrides(script_constants(namespace), argv)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
