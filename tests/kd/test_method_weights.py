"""The weights of the added methods in kd_study.py's METHODS are the ones measured on real chips
(docs/distillation-methods.md#measured-on-real-chips: feature and CWD at weight 1 drove UnetLight to IoU 0
there), and the docs state them; kd.py keeps every added method off by default."""
from conftest import ROOT

import kd_study
from lib_kd.constants import kd_constants

WEIGHTS = {"feature": {"KD_FEATURE": 0.3}, "cwd": {"KD_CWD": 0.3}, "affinity": {"KD_AFFINITY": 1.0}}


def test_study_methods_take_the_weights_measured_on_real_chips():
    for method, overrides in WEIGHTS.items():
        assert kd_study.METHODS[method] == overrides
    assert kd_study.METHODS["all"] == {name: value for overrides in WEIGHTS.values() for name, value in overrides.items()}


def test_kd_py_keeps_the_added_methods_off_by_default():
    kd = kd_constants()
    assert kd["KD_FEATURE"] == kd["KD_CWD"] == kd["KD_AFFINITY"] == 0.0


def test_docs_state_the_weights():
    text = (ROOT / "docs" / "distillation-methods.md").read_text()
    for overrides in WEIGHTS.values():
        for name, value in overrides.items():
            assert f"`{name}={value:g}`" in text
