import pytest

from lib.cli import run

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
