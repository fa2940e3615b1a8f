"""Learning from a few real-like SAR chips (docs/real-sar.md#7-learning-from-real-chips-the-collapse-and-the-recipe):
BatchNorm statistics re-estimated before validation, every model leaving the constant answer with the real-data
recipe, VV and VH as input channels (INPUT_BANDS), fine-tuning (INIT_CHECKPOINT) and the wider SAR jitter."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import history, tiny_constants
from lib.checkpoint import load_model
from lib.data.augmentation import SarJitter, train_augmentation
from lib.data.factory import build_datasets
from lib.errors import CheckpointError
from lib.models.factory import build_model
from lib.train.batchnorm import refresh_batchnorm
from lib.train.engine import build_run, train

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
# the real-data recipe of docs/real-sar.md, at test scale
RECIPE = dict(INPUT_BANDS=("VV", "VH"), BCE_WEIGHT=1.0, TRAIN_BANDS=("VV", "VH"), BATCH_SIZE=4, IMAGE_SIZE=SIZE)


def write_chip(folder, patch_id: str, water: np.ndarray, rng: np.random.Generator) -> None:
    """VV/VH in dB as on real Sentinel-1 chips: water about 9 dB below land with overlapping tails, a scene
    offset, 4-look speckle, VH 7 dB below VV; water 1, land 0."""
    offset = rng.uniform(-2, 2)
    for band, shift in (("VV", 0.0), ("VH", -7.0)):
        level = np.where(water, -19.0, -10.0) + offset + shift + rng.normal(0, 2.0, water.shape)
        speckle = 10 * np.log10(rng.gamma(4.0, 0.25, water.shape))
        np.save(folder / "img" / f"{patch_id}_{band}.npy", (level + speckle).astype(np.float32))
    np.save(folder / "lab" / f"{patch_id}.npy", water.astype(np.uint8))


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    """16 training and 4 validation patches of 64 px: smooth water bodies of 0-70 % per patch, one dry patch in 4."""
    root = tmp_path_factory.mktemp("real_like")
    rng = np.random.default_rng(3)
    for split, count in (("train", 16), ("val", 4)):
        for sub in ("img", "lab"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            field = cv2.GaussianBlur(rng.normal(size=(SIZE, SIZE)).astype(np.float32), (0, 0), 6)
            share = 0.0 if i % 4 == 3 else rng.uniform(0.2, 0.7)
            water = field < np.quantile(field, share) if share else np.zeros((SIZE, SIZE), bool)
            write_chip(root / split, f"chip{i}_r0c0", water, rng)
    return root


def water_share(root) -> float:
    labels = [np.load(p) for p in sorted((root / "val" / "lab").glob("*.npy"))]
    return float(sum((a == 1).sum() for a in labels) / sum(a.size for a in labels))


# ------------------------------------------------------------------------------------- BatchNorm

def test_refresh_gives_eval_mode_the_statistics_of_the_current_weights():
    torch.manual_seed(0)
    model = build_model("UnetLight", {"width": 8})
    images = torch.rand(4, 1, SIZE, SIZE)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):  # stale: statistics of weights long gone
            layer.running_mean.fill_(5.0)
            layer.running_var.fill_(50.0)
    model.train()
    with torch.no_grad():
        batch_statistics = model(images)
    model.eval()
    with torch.no_grad():
        stale = model(images)
    assert (stale - batch_statistics).abs().max() > 0.1
    assert refresh_batchnorm(model, [(images, None, None)], torch.device("cpu")) == 1
    assert not model.training  # the mode it was in
    with torch.no_grad():
        refreshed = model(images)
    torch.testing.assert_close(refreshed, batch_statistics, atol=2e-3, rtol=1e-2)  # running_var is unbiased
    assert all(layer.momentum == 0.1 for layer in model.modules() if isinstance(layer, torch.nn.BatchNorm2d))


def test_models_without_batchnorm_are_left_alone():
    model = build_model("PSPMixer", {"image_size": SIZE, "patch": 8, "hidden": 16, "depth": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert refresh_batchnorm(model, [(torch.rand(2, 1, SIZE, SIZE), None, None)], torch.device("cpu")) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------- no constant answer, every model

MODELS = {
    "UnetLight": {"width": 8},
    "PSPNet": {"encoder_depth": 3},
    "Unet": {},
    "PSPMixer": {"image_size": SIZE, "patch": 8, "hidden": 32, "depth": 2},
    "MLP_256": {"widths": (32, 16)},
    "UNet_Classic": {"base_channels": 8},
    "DeepUNet": {"width": 8, "hidden": 16},
}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_leaves_the_constant_answer_with_the_real_data_recipe(name, real_like, tmp_path):
    share = water_share(real_like)
    constants = tiny_constants(real_like, tmp_path / name, EPOCHS=6, PATIENCE=100, LR=2e-3, **RECIPE)
    train(constants, name, MODELS[name])
    rows = history(tmp_path / name)
    last = {band: float(rows[-1][f"val_iou_{band}"]) for band in ("VV", "VH")}
    # all water scores the water share, all land 0: the last epoch is above both by a margin
    assert min(last.values()) > share + 0.1, (share, [row["val_iou"] for row in rows])


# ----------------------------------------------------------------------------- INPUT_BANDS, fine-tuning

def test_input_bands_stack_the_bands_and_mark_no_data_of_either(real_like, tmp_path):
    vh = real_like / "val" / "img" / "chip0_r0c0_VH.npy"
    original = np.load(vh)
    try:
        damaged = original.copy()
        damaged[0, :5] = np.nan
        np.save(vh, damaged)
        train_set, val_set = build_datasets(tiny_constants(real_like, tmp_path, AUGMENT=False, **RECIPE), log=lambda *a: None)
        image, target, _ = val_set[0]
        assert image.shape == (2, SIZE, SIZE) and len(val_set) == 2 * 4  # each patch once per val band
        torch.testing.assert_close(val_set[1][0], image)                  # the same stacked image
        assert (target[0, 0, :5] == 255).all() and (target[0, 1:] != 255).all()
        assert train_set[0][0].shape == (2, SIZE, SIZE) and len(train_set) == 16
    finally:
        np.save(vh, original)


def test_input_bands_checkpoint_rebuilds_with_two_channels(real_like, tmp_path):
    train(tiny_constants(real_like, tmp_path / "stack", **RECIPE), "UnetLight", {"width": 8})
    model, checkpoint = load_model(tmp_path / "stack" / "last.pt")
    assert checkpoint["model"]["args"] == {"width": 8, "in_channels": 2}
    assert checkpoint["data"]["input_bands"] == ["VV", "VH"]
    assert model(torch.zeros(1, 2, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)
    import predict  # one band of a stacked model: refused in one line, not a shape error deep in the model
    with pytest.raises(SystemExit, match="error: .*INPUT_BANDS=VV\\+VH.*--band must name exactly VV,VH"):
        predict.main([str(tmp_path / "stack" / "last.pt"), str(tmp_path / "in.tif"), str(tmp_path / "out.tif"),
                      "--band", "VV"])
    plain = tiny_constants(real_like, tmp_path / "plain", TRAIN_BANDS=("VV", "VH"))
    train(plain, "UnetLight", {"width": 8})
    assert "input_bands" not in load_model(tmp_path / "plain" / "last.pt")[1]["data"]  # band-agnostic: as before


def test_init_checkpoint_starts_from_its_weights_and_refuses_another_model(real_like, tmp_path):
    train(tiny_constants(real_like, tmp_path / "pre", **RECIPE), "UnetLight", {"width": 8})
    start = tmp_path / "pre" / "last.pt"
    saved = torch.load(start, weights_only=True)["state_dict"]
    run = build_run(tiny_constants(real_like, tmp_path / "fine", INIT_CHECKPOINT=str(start), **RECIPE),
                    "UnetLight", {"width": 8})
    assert all(torch.equal(saved[k], v) for k, v in run.model.state_dict().items())
    with pytest.raises(CheckpointError, match="INIT_CHECKPOINT .*same architecture"):
        build_run(tiny_constants(real_like, tmp_path / "wide", INIT_CHECKPOINT=str(start), **RECIPE),
                  "UnetLight", {"width": 16})
    with pytest.raises(CheckpointError, match="INPUT_BANDS"):
        build_run(tiny_constants(real_like, tmp_path / "one", INIT_CHECKPOINT=str(start), TRAIN_BANDS=("VV", "VH")),
                  "UnetLight", {"width": 8, "in_channels": 2})


def test_sar_offset_db_swaps_brightness_for_sar_jitter():
    jitter = [t for t in train_augmentation(0, sar_offset_db=6.0).transforms if isinstance(t, SarJitter)]
    assert len(jitter) == 1 and jitter[0].offset_db == 6.0
    assert not any(isinstance(t, SarJitter) for t in train_augmentation(0).transforms)  # published default
