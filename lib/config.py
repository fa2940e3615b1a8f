"""UPPER_CASE constants of a script, their command-line overrides (`NAME=value`), and the one resolved
configuration the library trusts.

A script keeps its hyperparameters as module constants (nanoGPT style). `load_constants(globals())`
collects them, applies `NAME=value` arguments from the command line, and checks every value against
lib/constants_table.py CONSTANTS before any work starts: an unknown name, a value of the wrong type or out of
range is one ConfigError naming the constant, the value and what is allowed (lib/cli.py prints it as
`error: ...`). It returns a frozen `Constants`: typed values ("0" -> False, "3" -> 3, "VV,VH" -> ("VV", "VH")),
completed with DEFAULTS and what follows from DATA_FORMAT, resolved once here and passed on (like timm's
`args`); the library reads it and never checks it again. `resolve_constants` is the same resolver for a plain
dict (a test, a caller without a script). The placeholders that depend on the machine ("auto" devices,
workers, precision) are resolved by lib/runtime.py from these typed values.
"""
from __future__ import annotations

import sys
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from lib.constants_table import CONSTANTS, DEFAULTS, UnavailableDevice, literal_dict, split_list, to_bool
from lib.cli import HELP, split_argument
from lib.errors import ConfigError

# KOMPSAT-5 scenes have one band, HH: a kompsat5 run's TRAIN_BANDS and VAL_BANDS, whatever the script says
KOMPSAT5_BANDS = ("HH",)

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
    """`c` with every constant of the table checked and typed (others, and `skip`, are kept as they are);
    `resolve` adds the checks between constants. `defaults`: the script's own values (for where None is accepted)."""
    defaults = c if defaults is None else defaults
    result = {name: check_value(name, value, defaults.get(name)) if name in CONSTANTS and name not in skip else value
              for name, value in c.items()}
    return result


def check_between(c: Mapping[str, Any]) -> None:
    """The checks that involve two constants: PATCH must divide IMAGE_SIZE."""
    patch, size = c.get("PATCH"), c.get("IMAGE_SIZE")
    if isinstance(patch, int) and isinstance(size, int) and size % patch:
        divisors = [str(p) for p in range(1, min(size, 64) + 1) if size % p == 0]
        raise ConfigError(f"PATCH={patch}: expected an integer >= 1 that divides IMAGE_SIZE={size}, "
                          f"e.g. {', '.join(divisors[-4:])}")


def with_defaults(c: Mapping[str, Any]) -> dict[str, Any]:
    """`c` completed with DEFAULTS, unchecked (for constants recorded in a checkpoint, which may name a device
    this machine lacks)."""
    return {**DEFAULTS, **c}


# ------------------------------------------------------------------------------------ resolved constants

_RESOLVER = object()  # only `resolve` makes Constants: whatever holds one holds checked values


class Constants(Mapping):
    """A run's constants, checked, typed and completed once (`load_constants`, `resolve_constants`); the library
    trusts them. Read-only, by key or attribute (`c["EPOCHS"]`, `c.EPOCHS`); `c.replace(NAME=value)` is a
    changed copy, checked again. `c.given`: the values the script gave, as checkpoints and summary.json record
    them (without the defaults it left out or the KOMPSAT-5 bands)."""
    __slots__ = ("_values", "_given")

    def __init__(self, values: Mapping[str, Any], given: Mapping[str, Any], key: object = None):
        if key is not _RESOLVER:
            raise TypeError("Constants are made by lib.config.load_constants or resolve_constants, which check them")
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "_given", MappingProxyType(dict(given)))

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and name in self._values:
            return self._values[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Constants are read-only: use c.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Constants are read-only")

    def __reduce__(self):  # a copy (pickle, deepcopy) is the same checked values
        return _rebuild, (dict(self._values), dict(self._given))

    def __repr__(self) -> str:
        return f"Constants({dict(self._values)!r})"

    @property
    def given(self) -> dict[str, Any]:
        return dict(self._given)

    def replace(self, **changes: Any) -> "Constants":
        """A copy with `changes` applied to the given values, checked and resolved again (a None is accepted
        wherever the table gives it a meaning)."""
        given = {**self._given, **changes}
        return resolve(given, given, skip=() if "DEVICE" in changes else ("DEVICE",))


def _rebuild(values: dict, given: dict) -> Constants:
    return Constants(values, given, _RESOLVER)


def resolve(given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
            skip: Sequence[str] = ()) -> Constants:
    """The one resolver: `given` checked and typed (check_constants), completed with DEFAULTS, and what follows
    from DATA_FORMAT (KOMPSAT-5 scenes have one band, HH)."""
    checked = check_constants(given, defaults, skip)
    values = {**DEFAULTS, **checked}
    check_between(values)
    if values["DATA_FORMAT"] == "kompsat5":
        values.update(TRAIN_BANDS=KOMPSAT5_BANDS, VAL_BANDS=KOMPSAT5_BANDS)
    return Constants(values, checked, _RESOLVER)


def resolve_constants(c: Mapping[str, Any]) -> Constants:
    """Constants from a plain dict (a test, a caller without a script): the same resolver as load_constants.
    DEVICE is left to lib.runtime.resolve_device, which checks it where it is used (recorded constants may name
    a device this machine lacks); None is accepted wherever the table gives it a meaning (kd.py fills the
    teacher's first)."""
    return resolve(c, c, skip=("DEVICE",))


def as_constants(c: Mapping[str, Any]) -> Constants:
    """`c` itself when it is resolved already, else resolved: the one conversion at a public entry that a plain
    dict may reach."""
    return c if isinstance(c, Constants) else resolve_constants(c)


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
        if arg in HELP:  # help on stdout and exit status 0, as argparse does
            print(describe(constants))
            raise SystemExit(0)
        name, text_value = split_argument(arg)
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


def load_constants(namespace: Mapping[str, Any], argv: Sequence[str] | None = None) -> Constants:
    """The script's constants with command-line overrides, every value checked, typed and resolved once; a
    ConfigError (reported by lib.cli.run as one `error:` line) on the first that is not allowed."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = script_constants(namespace)
    return resolve(apply_overrides(defaults, argv), defaults)
