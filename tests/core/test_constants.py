"""The constants table (lib/config.py CONSTANTS): every constant's type and range, the bad values a user
types, and a drift test that the copies of the shared constants in the scripts agree with DEFAULTS."""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from lib.cli import run
from lib.constants_table import MAX_SEED, SCRIPT_DIFFERENCES
from lib.config import (CONSTANTS, DEFAULTS, ConfigError, check_value, load_constants,
                        resolve_constants, with_defaults)

# train_folds.py runs the other scripts (its FOLDS/DRY_RUN are read by itself); it has no training constants
SCRIPTS = sorted(p.name for p in ROOT.glob("train_*.py") if p.name != "train_folds.py") + ["kd.py"]


def script_literals(script: str) -> dict:
    """The UPPER_CASE constants of a script, read with ast (the script is not run)."""
    constants = {}
    for node in ast.parse((ROOT / script).read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id.isupper():
                constants[node.targets[0].id] = ast.literal_eval(node.value)
    return constants


# ------------------------------------------------------------------------------------------ drift test

@pytest.mark.parametrize("script", SCRIPTS)
def test_shared_constants_agree_with_defaults_unless_listed(script):
    constants = script_literals(script)
    listed = SCRIPT_DIFFERENCES.get(script, {})
    drifted = {name: value for name, value in constants.items()
               if name in DEFAULTS and value != DEFAULTS[name] and name not in listed}
    assert not drifted, f"{script} differs from lib.config.DEFAULTS without a reason in SCRIPT_DIFFERENCES"
    stale = [name for name in listed if constants.get(name, DEFAULTS.get(name)) == DEFAULTS.get(name)]
    assert not stale, f"SCRIPT_DIFFERENCES lists {stale} for {script}, but the script no longer differs"
    assert all(reason.strip() for reason in listed.values())


def test_every_listed_script_exists():
    assert set(SCRIPT_DIFFERENCES) <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_constant_is_in_the_table_and_its_value_allowed(script):
    constants = script_literals(script)
    assert set(constants) <= set(CONSTANTS), f"{script}: constants without a type/range: {set(constants) - set(CONSTANTS)}"
    for name, value in constants.items():
        check_value(name, value, default=value)


# -------------------------------------------------------------------------- every constant's range

# per constant: values it accepts (with the typed value they give) and values it refuses
GOOD = {
    "DATA_FORMAT": [("kompsat5", "kompsat5")], "DATA_ROOT": [("02_kfold/fold_1", "02_kfold/fold_1")],
    "TRAIN_LIST": [("train.txt", "train.txt")], "VAL_LIST": [("val.txt", "val.txt")],
    "TRAIN_BANDS": [("VV,NDWI", ("VV", "NDWI")), (["VH"], ("VH",))], "VAL_BANDS": [("('VV', 'VH')", ("VV", "VH"))],
    "IMAGE_SIZE": [("64", 64)], "NORMALIZATION": [("published", "published"), ("sar", "sar")],
    "PRELOAD": [("auto", "auto"), ("0", False), (True, True)],
    "AUGMENT": [("false", False)], "EPOCHS": [("1", 1)], "BATCH_SIZE": [(2, 2)], "LR": [("1e-3", 1e-3)],
    "WEIGHT_DECAY": [("0", 0.0)], "WARMUP_EPOCHS": [("0", 0)], "PLATEAU_PATIENCE": [("0", 0)],
    "PLATEAU_FACTOR": [("0.1", 0.1)], "PATIENCE": [("1", 1)], "SEED": [("0", 0), (str(MAX_SEED), MAX_SEED)], "FTL_ALPHA": [("0.5", 0.5)],
    "FTL_BETA": [("0", 0.0)], "FTL_GAMMA": [("1", 1.0)], "BCE_WEIGHT": [("0", 0.0), ("0.5", 0.5)], "DEVICE": [("auto", "auto"), ("CPU", "cpu")],
    "PRECISION": [("bf16", "bf16")], "CHANNELS_LAST": [("0", False), ("auto", "auto")], "COMPILE": [("1", True)],
    "NUM_WORKERS": [("3", 3), ("auto", "auto")], "SYNC_BN": [("1", True)], "OUTPUT_DIR": [('"runs/x"', "runs/x"), (None, None)],
    "RESUME": [("yes", True)], "OVERWRITE": [("1", True)], "ENCODER_WEIGHTS": [("imagenet", "imagenet"), ("None", None)], "PROGRESS": [("0", False)],
    "ENCODER_NAME": [("resnet18", "resnet18")], "ENCODER_DEPTH": [("3", 3)], "WIDTHS": [("64,32", (64, 32))],
    "DROPOUT": [("0", 0.0)], "WIDTH": [("4", 4)], "BASE_CHANNELS": [("8", 8)], "BATCH_NORM": [("0", False)],
    "FC_WIDTH": [("64", 64)], "FC_KERNEL": [("1", 1)], "HRNET_VARIANT": [("hrnet_w18_small", "hrnet_w18_small")],
    "PATCH": [("16", 16)], "HIDDEN": [("16", 16)], "DEPTH": [("2", 2)], "TOKENS_MLP": [("none", None), ("8", 8)],
    "CHANNELS_MLP": [("32", 32)], "REFINE": [("0", 0), ("16", 16)], "MIXER_ACTIVATION": [("relu", "relu")],
    "MIXER_NORM": [("batch", "batch")], "CALIBRATION_DB": [("-3.5", -3.5)], "K5_TRAIN_CROP": [("tiles", "tiles")],
    "K5_CROPS_PER_SCENE": [("4", 4)], "TEACHER_CHECKPOINT": [("runs/unet/best.pt", "runs/unet/best.pt")],
    "STUDENT": [("UnetLight", "UnetLight")], "STUDENT_ARGS": [("{'width': 8}", {"width": 8}), (None, None)],
    "KD_TEMPERATURE": [("2", 2.0)], "KD_ALPHA": [("0", 0.0)], "KD_BETA": [("1", 1.0)],
    "KD_FEATURE": [("1", 1.0)], "KD_FEATURE_LOSS": [("cosine", "cosine")], "KD_FEATURE_STUDENT_LAYER": [("head:input", "head:input"), (None, None)],
    "KD_FEATURE_TEACHER_LAYER": [("decoder", "decoder")], "KD_CWD": [("0.5", 0.5)], "KD_AFFINITY": [("0", 0.0)],
    "KD_AFFINITY_GRID": [("8", 8)], "COST_TABLE": [("0", False)],
    "INPUT_BANDS": [("VV+VH", ("VV", "VH")), ("VV,VH", ("VV", "VH")), (None, None)], "SAR_OFFSET_DB": [("6", 6.0)],
    "INIT_CHECKPOINT": [("runs/pretrained/best.pt", "runs/pretrained/best.pt"), (None, None)],
}
BAD = {
    "DATA_FORMAT": ["tiff", None], "DATA_ROOT": ["", None], "TRAIN_LIST": [""], "VAL_LIST": [None],
    "TRAIN_BANDS": ["", "()", "VV,XX", None], "VAL_BANDS": ["vv"], "IMAGE_SIZE": ["None", "abc", "0", "64.5"],
    "NORMALIZATION": ["db", ""], "PRELOAD": ["maybe", None], "AUGMENT": ["2"], "EPOCHS": ["None", "0", "1.5"], "BATCH_SIZE": ["0", "none", "-4"],
    "LR": ["-1", "nan", "inf", "0", "None"], "WEIGHT_DECAY": ["-1e-4"], "WARMUP_EPOCHS": ["-1"],
    "PLATEAU_PATIENCE": ["x"], "PLATEAU_FACTOR": ["1", "0"], "PATIENCE": ["0"], "SEED": ["-1", str(2**64), str(MAX_SEED + 1)],
    "FTL_ALPHA": ["-0.1"], "FTL_BETA": ["nan"], "FTL_GAMMA": ["0"], "BCE_WEIGHT": ["-1", "inf"], "DEVICE": ["gpu", "tpu", ""],
    "PRECISION": ["fp64"], "CHANNELS_LAST": ["maybe"], "COMPILE": ["2"], "NUM_WORKERS": ["abc", "-1", None],
    "SYNC_BN": ["sometimes"], "OUTPUT_DIR": ["", 3], "RESUME": ["2"], "OVERWRITE": ["maybe"], "ENCODER_WEIGHTS": [""], "PROGRESS": ["x"],
    "ENCODER_NAME": [""], "ENCODER_DEPTH": ["0", "6"], "WIDTHS": ["", "64,0"], "DROPOUT": ["1", "-0.1"],
    "WIDTH": ["0"], "BASE_CHANNELS": ["0"], "BATCH_NORM": ["x"], "FC_WIDTH": ["0"], "FC_KERNEL": ["0"],
    "HRNET_VARIANT": [""], "PATCH": ["0"], "HIDDEN": ["0"], "DEPTH": ["0"], "TOKENS_MLP": ["0"], "CHANNELS_MLP": ["-1"],
    "REFINE": ["-1", "8.5"], "MIXER_ACTIVATION": ["swish", ""], "MIXER_NORM": ["group"],
    "CALIBRATION_DB": ["nan", "abc"], "K5_TRAIN_CROP": ["grid"], "K5_CROPS_PER_SCENE": ["0"],
    "TEACHER_CHECKPOINT": ["", None], "STUDENT": ["NoSuchNet"], "STUDENT_ARGS": ["{'width': 8", "[1, 2]", "8"],
    "KD_TEMPERATURE": ["inf", "0", "1e-30", "1e30"], "KD_ALPHA": ["-1"], "KD_BETA": ["nan"],
    "KD_FEATURE": ["-1"], "KD_FEATURE_LOSS": ["l1"], "KD_FEATURE_STUDENT_LAYER": [""], "KD_FEATURE_TEACHER_LAYER": [""],
    "KD_CWD": ["nan"], "KD_AFFINITY": ["-0.5"], "KD_AFFINITY_GRID": ["0"], "COST_TABLE": ["maybe"],
    "INPUT_BANDS": ["VV+XX", "VV+VV", ""], "SAR_OFFSET_DB": ["-1", "inf"], "INIT_CHECKPOINT": [""],
}


def test_every_constant_has_cases():
    assert set(GOOD) == set(CONSTANTS) and set(BAD) == set(CONSTANTS)


@pytest.mark.parametrize("name, value, typed", [(n, v, t) for n, cases in GOOD.items() for v, t in cases])
def test_allowed_values_are_typed(name, value, typed):
    assert check_value(name, value) == typed


@pytest.mark.parametrize("name, value", [(n, v) for n, values in BAD.items() for v in values])
def test_refused_values_name_the_constant_the_value_and_what_is_allowed(name, value):
    with pytest.raises(ConfigError) as error:
        check_value(name, value, default=0)
    message = str(error.value)
    assert message.startswith(f"{name}=") and "expected" in message and "\n" not in message
    shown = f"{name}=None" if value is None or str(value).lower() == "none" else f"{name}={value!r}"
    assert message.startswith(shown), message


def test_none_is_accepted_only_where_it_means_something():
    assert "teacher" in CONSTANTS["IMAGE_SIZE"].none
    assert check_value("IMAGE_SIZE", None, default=None) is None  # kd.py: the teacher's
    with pytest.raises(ConfigError, match="IMAGE_SIZE=None: .*only where the script's own default is None"):
        check_value("IMAGE_SIZE", None, default=256)
    for name in ("OUTPUT_DIR", "ENCODER_WEIGHTS", "TOKENS_MLP", "CHANNELS_MLP", "STUDENT_ARGS"):
        assert check_value(name, "None", default="x") is None and CONSTANTS[name].none
    nameless = [n for n, spec in CONSTANTS.items() if not spec.none]
    assert "EPOCHS" in nameless and "LR" in nameless


# -------------------------------------------------------------------------- the user path: scripts

@pytest.mark.parametrize("script, arg, fragment", [
    ("train_pspmixer.py", "IMAGE_SIZE=None", "IMAGE_SIZE=None: expected an integer >= 8"),
    ("train_pspmixer.py", "EPOCHS=None", "EPOCHS=None: expected an integer >= 1"),
    ("train_pspmixer.py", "BATCH_SIZE=0", "BATCH_SIZE='0': expected an integer >= 1"),
    ("train_pspmixer.py", "LR=-1", "LR='-1': expected a finite number > 0"),
    ("train_pspmixer.py", "LR=nan", "LR='nan': expected a finite number > 0"),
    ("train_pspmixer.py", "NUM_WORKERS=abc", "NUM_WORKERS='abc': expected auto or an integer >= 0"),
    ("train_pspmixer.py", "DEVICE=gpu", "DEVICE='gpu': expected auto, cpu, cuda"),
    ("train_pspmixer.py", "PATCH=24", "PATCH=24: expected an integer >= 1 that divides IMAGE_SIZE=256"),
    ("train_pspmixer.py", "TRAIN_BANDS=VV,XX", "TRAIN_BANDS='VV,XX': expected a non-empty list of bands with a normalization range"),
    ("train_pspmixer.py", "VAL_BANDS=", "VAL_BANDS='': expected a non-empty list of bands"),
    ("train_unetlight.py", "TRAIN_BANDS=()", "TRAIN_BANDS='()': expected a non-empty list of bands"),
    ("kd.py", "STUDENT_ARGS={'width': 8", "STUDENT_ARGS=\"{'width': 8\": expected a dict of keyword arguments"),
    ("kd.py", "KD_TEMPERATURE=inf", "KD_TEMPERATURE='inf': expected a number from 0.01 to 1000"),
    ("kd.py", "PATCH=24", "PATCH=24: expected an integer >= 1 that divides IMAGE_SIZE"),  # with IMAGE_SIZE given
    ("train_hrnet.py", "K5_TRAIN_CROP=grid", "K5_TRAIN_CROP='grid': expected random or tiles"),
    ("train_hrnet.py", "K5_CROPS_PER_SCENE=0", "K5_CROPS_PER_SCENE='0': expected an integer >= 1"),
])
def test_bad_value_is_one_error_line_before_any_work(script, arg, fragment, capsys):
    args = [arg, "IMAGE_SIZE=256"] if script == "kd.py" and arg.startswith("PATCH") else [arg]
    with pytest.raises(SystemExit) as exit_info:
        run(lambda: load_constants(script_literals(script), args))
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment in lines[0]


def test_script_defaults_that_are_out_of_range_are_refused_too():
    with pytest.raises(ConfigError, match="BATCH_SIZE=0: expected an integer >= 1"):
        load_constants({**script_literals("train_unetlight.py"), "BATCH_SIZE": 0}, [])


def test_loaded_constants_are_typed():
    c = load_constants(script_literals("train_pspmixer.py"),
                       ["CHANNELS_LAST=0", "COMPILE=1", "NUM_WORKERS=2", "PRELOAD=false", "DEVICE=CPU",
                        'OUTPUT_DIR="/tmp/x"', "TRAIN_BANDS=VV,VH", "TOKENS_MLP=None", "PATCH=32"])
    assert (c["CHANNELS_LAST"], c["COMPILE"], c["NUM_WORKERS"], c["PRELOAD"], c["DEVICE"]) == (False, True, 2, False, "cpu")
    assert c["OUTPUT_DIR"] == "/tmp/x" and c["TRAIN_BANDS"] == ("VV", "VH") and c["TOKENS_MLP"] is None
    assert c["PATCH"] == 32 and c["PRECISION"] == "auto"  # machine-dependent placeholders: lib.runtime resolves
    kd = load_constants(script_literals("kd.py"), ["STUDENT_ARGS={'width': 8}", "STUDENT=UnetLight"])
    assert kd["STUDENT_ARGS"] == {"width": 8} and kd["IMAGE_SIZE"] is None  # None: the teacher's, filled by lib_kd
    # what a checkpoint records: the script's own constants, as given (c.given); c itself is completed
    assert "AUGMENT" not in c.given and c["AUGMENT"] is True


def test_resolve_constants_merges_defaults_once_and_checks():
    c = resolve_constants({"EPOCHS": "2", "CHANNELS_LAST": "0"})
    assert c["EPOCHS"] == 2 and c["CHANNELS_LAST"] is False and c["AUGMENT"] is True and set(DEFAULTS) <= set(c)
    with pytest.raises(ConfigError, match="BATCH_SIZE=0"):
        resolve_constants({"BATCH_SIZE": 0})
    recorded = {"DEVICE": "cuda:7", "IMAGE_SIZE": None}  # a kd.py run's constants from another machine
    assert resolve_constants(recorded)["DEVICE"] == "cuda:7" and with_defaults(recorded)["EPOCHS"] == 40


def test_the_docs_page_lists_every_constant():
    page = (ROOT / "docs" / "constants.md").read_text()
    assert [name for name in CONSTANTS if f"| `{name}` |" not in page] == []


def test_kd_checks_what_it_inherits_from_the_teacher(tiny_pspnet, tiny_data, tmp_path):
    from lib_kd.training_kd import distill
    output = tmp_path / "kd"
    c = load_constants(script_literals("kd.py"), [f"TEACHER_CHECKPOINT={tiny_pspnet}", f"DATA_ROOT={tiny_data}",
                                            f"OUTPUT_DIR={output}", "PATCH=24", "DEVICE=cpu", "NUM_WORKERS=0"])
    assert c["IMAGE_SIZE"] is None  # so PATCH can only be checked against the teacher's 64
    with pytest.raises(ConfigError, match="PATCH=24: expected an integer >= 1 that divides IMAGE_SIZE=64"):
        distill(c)
    assert not output.exists()  # refused before any work


def test_the_kompsat5_crop_modes_are_the_datasets():
    from lib.data.kompsat5.dataset import TRAIN_CROPS
    assert [check_value("K5_TRAIN_CROP", crop) for crop in TRAIN_CROPS] == list(TRAIN_CROPS)
