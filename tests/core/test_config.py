import pytest

from conftest import ROOT
from lib.cli import run, split_argument

from lib.config import ConfigError, apply_overrides, load_constants, script_constants

CONSTANTS = dict(EPOCHS=40, LR=5e-4, RESUME=False, DATA_ROOT="02_kfold", TRAIN_BANDS=("VV", "VH"),
                 ENCODER_WEIGHTS="imagenet", TOKENS_MLP=None)


def test_overrides_take_the_type_of_the_default():
    c = apply_overrides(CONSTANTS, ["EPOCHS=2", "LR=1e-3", "RESUME=1", "DATA_ROOT=02_kfold/fold_1",
                                    "TRAIN_BANDS=VV,NDWI", "ENCODER_WEIGHTS=None", "TOKENS_MLP=64"])
    assert c == dict(EPOCHS=2, LR=1e-3, RESUME=True, DATA_ROOT="02_kfold/fold_1", TRAIN_BANDS=("VV", "NDWI"),
                     ENCODER_WEIGHTS=None, TOKENS_MLP=64)
    assert CONSTANTS["EPOCHS"] == 40  # the defaults are untouched


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown constant 'EPOCH'.*EPOCHS, LR"):
        apply_overrides(CONSTANTS, ["EPOCH=2"])


def test_wrong_type_is_a_clear_error():
    with pytest.raises(ConfigError, match="EPOCHS='abc': expected an integer"):
        apply_overrides(CONSTANTS, ["EPOCHS=abc"])
    with pytest.raises(ConfigError, match="expected NAME=value"):
        apply_overrides(CONSTANTS, ["EPOCHS"])


def test_every_name_value_reader_splits_alike_and_says_the_same(monkeypatch):
    """config, kd.py's sweeps, kd_study.py and train_folds.py read NAME=value with lib.cli.split_argument."""
    import kd_study
    import train_folds
    from lib_kd.training_kd import sweep_values

    assert split_argument(" --EPOCHS=a=b") == ("EPOCHS", "a=b")  # only the first '=' splits
    assert sweep_values(["--KD_TEMPERATURE=1,2"], "KD_TEMPERATURE") == ([], [1.0, 2.0])
    message = "cannot read argument 'EPOCHS': expected NAME=value, e.g. EPOCHS=2"
    readers = [lambda: apply_overrides(CONSTANTS, ["EPOCHS"]), lambda: sweep_values(["EPOCHS"], "KD_TEMPERATURE"),
               lambda: train_folds.parse_argv([str(ROOT / "train_unetlight.py"), "EPOCHS"]), kd_study.main]
    monkeypatch.setattr("sys.argv", ["kd_study.py", "EPOCHS"])
    for read in readers:
        with pytest.raises(ConfigError) as error:
            read()
        assert str(error.value) == message
    with pytest.raises(ConfigError, match="cannot read argument '=2'"):
        split_argument("=2")


def test_load_constants_exits_with_message(capsys):
    # library code raises the typed error; lib.cli.run turns it into one `error:` line and exit status 1
    with pytest.raises(ConfigError, match="unknown constant"):
        load_constants(CONSTANTS, ["NOPE=1"])
    with pytest.raises(SystemExit) as exit_info:
        run(lambda: load_constants(CONSTANTS, ["NOPE=1"]))
    assert exit_info.value.code == 1 and capsys.readouterr().err.startswith("error: unknown constant 'NOPE'")


def test_script_constants_keep_only_upper_case_plain_values():
    namespace = {"EPOCHS": 3, "lower": 1, "train": print, "_HIDDEN": 2, "BANDS": ("VV",)}
    assert script_constants(namespace) == {"EPOCHS": 3, "BANDS": ("VV",)}
