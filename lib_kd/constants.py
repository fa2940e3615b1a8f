"""kd.py's constants, for the tools that need them without running (or importing) the script.

kd.py shows every one of them at its top, with what it means; they are read from there as literals
(lib_kd.model_kd.script_defaults, as kd_study.py reads every train script), so that benchmark.py
(`--kd`) and other tools depend on lib_kd, never on a script, and a default is changed in one place.
tests/bench/test_speed.py checks that the literals read are every constant of the imported script.
"""
from __future__ import annotations

from typing import Any

from lib_kd.model_kd import ROOT, script_defaults


def kd_constants() -> dict[str, Any]:
    """A fresh dict of kd.py's default constants (pass it to lib.config.load_constants with overrides)."""
    return script_defaults(ROOT / "kd.py")
