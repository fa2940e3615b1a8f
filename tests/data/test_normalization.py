"""NORMALIZATION: the Sentinel-1 range table a run trains with is recorded and followed by evaluation and prediction."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_constants
from lib.data.bands import NORMALIZATIONS, SAR_DB_RANGE, normalization_name, normalization_table
from lib.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["sar", "published"])
def test_checkpoint_round_trip_follows_the_recorded_normalization(tiny_data, tmp_path, name):
    import evaluate
    from lib.checkpoint import load_model
    from lib.train.engine import train
    from lib.mapping.rasters import make_preprocess
    summary = train(tiny_constants(tiny_data, tmp_path / name, NORMALIZATION=name), "MLP_256", {"widths": [8]})
    model, checkpoint = load_model(tmp_path / name / "best.pt")
    recorded = checkpoint["data"]["normalization"]
    assert recorded["VH"] == list(NORMALIZATIONS[name]["VH"]) and normalization_name(recorded) == name
    assert checkpoint["data"]["normalization_name"] == name  # recorded beside its table
    assert checkpoint["constants"]["NORMALIZATION"] == name
    # evaluation rebuilds the input from the checkpoint alone and gets the training run's numbers
    result = evaluate.main([str(tmp_path / name / "best.pt"), "--data-root", str(tiny_data), "--out",
                            str(tmp_path / "eval"), "--device", "cpu", "--workers", "0"])
    assert result["results"][0]["iou"] == pytest.approx(summary["val_iou"], abs=1e-6)
    # so does prediction: -25 dB VH is 0.0 in the published range (floor -22.2 dB), not in "sar" (floor -38 dB)
    image, _ = make_preprocess("VH", recorded)(np.full((2, 2), -25.0, np.float32))
    assert (image == 0.0).all() == (name == "published")


def test_published_table_is_one_constant_away():
    assert normalization_table("published")["VV"] == normalization_table("published")["VH"] == SAR_DB_RANGE
    sar = normalization_table("sar")
    assert sar["VH"][0] < -30.0 and sar["VV"][1] > 0.0  # room for calm VH water and bright VV land
    with pytest.raises(ConfigError, match="NORMALIZATION='db': expected one of sar, published"):
        normalization_table("db")


def test_water_is_dark_in_every_normalized_band_of_the_sar_table(tiny_data):
    """One band-blind network, one polarity: with the "sar" table water is darker than land in all seven
    bands (NDWI inverted); the published table leaves NDWI the other way round."""
    from lib.data.dataset import BandPatchDataset
    bands = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")
    for name, ndwi_water_dark in (("sar", True), ("published", False)):
        dataset = BandPatchDataset(tiny_data, "train", bands, train=False, ranges=normalization_table(name), image_size=64)
        for band_index, band in enumerate(bands):
            water, land = [], []
            for item in range(band_index, len(dataset), len(bands)):
                image, target, _ = dataset[item]
                water.append(image[target == 1])
                land.append(image[target == 0])
            darker = float(np.median(np.concatenate(water))) < float(np.median(np.concatenate(land)))
            assert darker == (ndwi_water_dark or band != "NDWI"), (name, band)


def test_normalization_name_is_derived_only_on_an_exact_table_match():
    from lib.data.bands import CUSTOM_NORMALIZATION, recorded_normalization_name
    published = {band: list(NORMALIZATIONS["published"][band]) for band in ("VV", "VH")}
    assert normalization_name(published) == "published"
    # a checkpoint from before the name was recorded: derived from its table; a recorded name wins
    assert recorded_normalization_name({"normalization": published}) == "published"
    assert recorded_normalization_name({"normalization": published, "normalization_name": "sar"}) == "sar"
    # a table that is none of NORMALIZATIONS is called what it is, never silently "sar"
    edited = {"VV": [-25.0, 5.0], "VH": list(NORMALIZATIONS["sar"]["VH"])}
    assert normalization_name(edited) == CUSTOM_NORMALIZATION == recorded_normalization_name({"normalization": edited})
    assert normalization_name({}) == normalization_name(None) == CUSTOM_NORMALIZATION


def test_old_checkpoints_without_the_name_still_pair_and_resume(tiny_data, tmp_path):
    """data["normalization_name"] is new: a teacher or a last.pt that lacks it is compared by its table alone."""
    from lib.data.factory import data_settings
    from lib.train.resume import meaning_differences
    from lib_kd.model_kd import pairing_problems
    c = tiny_constants(tiny_data, tmp_path / "old")
    current = data_settings(c)
    old = {key: value for key, value in current.items() if key != "normalization_name"}
    assert current["normalization_name"] == "sar" and pairing_problems(old, current) == []
    checkpoint = {"constants": dict(c), "model": {"name": "MLP_256", "args": {}}, "data": old}
    assert meaning_differences(checkpoint, c, "MLP_256", {}, current, 1, tmp_path) == {}
    # the table itself is still compared
    published = data_settings({**c, "NORMALIZATION": "published"})
    assert pairing_problems(old, published) and "data normalization" in meaning_differences(
        checkpoint, c, "MLP_256", {}, published, 1, tmp_path)
