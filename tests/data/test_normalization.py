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
