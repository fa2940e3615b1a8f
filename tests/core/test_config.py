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


# ------------------------------------------------------------------------------- the resolved constants

def test_constants_are_frozen_typed_and_replaced_by_a_checked_copy():
    import copy
    import pickle
    from lib.config import Constants, resolve_constants
    c = resolve_constants({"EPOCHS": "3", "DATA_FORMAT": "kompsat5"})
    assert isinstance(c, Constants) and c["EPOCHS"] == c.EPOCHS == 3 and c.AUGMENT is True  # a default
    assert c["TRAIN_BANDS"] == c["VAL_BANDS"] == ("HH",) and c.given == {"EPOCHS": 3, "DATA_FORMAT": "kompsat5"}
    with pytest.raises(AttributeError, match="read-only"):
        c.EPOCHS = 4
    with pytest.raises(TypeError):
        c["EPOCHS"] = 4
    with pytest.raises(AttributeError):
        del c.EPOCHS
    with pytest.raises(TypeError, match="load_constants"):
        Constants({"EPOCHS": -1}, {})  # only the resolver makes them
    longer = c.replace(EPOCHS="5")
    assert longer.EPOCHS == 5 and c.EPOCHS == 3 and longer.given["EPOCHS"] == 5
    with pytest.raises(ConfigError, match="EPOCHS=0"):
        c.replace(EPOCHS=0)
    assert copy.deepcopy(c) == c and pickle.loads(pickle.dumps(c)).given == c.given
    assert {**c}["LR"] == c["LR"] and dict(c) == dict(c.items())


def test_constants_are_resolved_once_per_run(tiny_data, tmp_path, monkeypatch):
    """load_constants resolves; the engine, the datasets, the loss and the checkpoint take them as they are."""
    import lib.config
    from conftest import tiny_constants
    from lib.checkpoint import read_checkpoint
    from lib.train.engine import train
    calls = []
    resolve = lib.config.resolve
    monkeypatch.setattr(lib.config, "resolve", lambda *a, **k: calls.append(a) or resolve(*a, **k))
    namespace = {**tiny_constants(tiny_data, tmp_path / "once"), "WIDTH": 4}
    c = load_constants(namespace, ["EPOCHS=1"])
    assert len(calls) == 1
    train(c, "UnetLight", {"width": c["WIDTH"]})
    assert len(calls) == 1  # nothing below the script resolves or checks the constants again
    checkpoint = read_checkpoint(tmp_path / "once" / "best.pt")
    assert checkpoint["constants"] == {**namespace, "EPOCHS": 1} and "AUGMENT" not in checkpoint["constants"]
    assert checkpoint["data"]["normalization_name"] == "sar"
