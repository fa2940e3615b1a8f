"""kd.py's constants, for the tools that need them without running (or importing) the script.

kd.py shows every one of them at its top, with what it means; this is the same block as data, so that
benchmark.py (`--kd`) and other tools depend on lib_kd, never on a script. tests/test_speed.py checks
that the two agree: change a default in both places.
"""
from __future__ import annotations

from typing import Any

KD_DEFAULTS: dict[str, Any] = dict(
    # distillation
    TEACHER_CHECKPOINT="runs/pspnet/best.pt", STUDENT="PSPMixer", STUDENT_ARGS=None,
    KD_TEMPERATURE=4.0, KD_ALPHA=0.5, KD_BETA=0.5,
    # added distillation methods (each a weight, 0 = off)
    KD_FEATURE=0.0, KD_FEATURE_LOSS="mse", KD_FEATURE_STUDENT_LAYER=None, KD_FEATURE_TEACHER_LAYER=None,
    KD_CWD=0.0, KD_AFFINITY=0.0, KD_AFFINITY_GRID=16,
    # student (PSPMixer)
    PATCH=32, HIDDEN=128, DEPTH=3, TOKENS_MLP=64, CHANNELS_MLP=256,
    # data (None: as recorded in TEACHER_CHECKPOINT)
    DATA_FORMAT="bands", DATA_ROOT="02_kfold", TRAIN_LIST="train.txt", VAL_LIST="val.txt",
    TRAIN_BANDS=None, VAL_BANDS=None, IMAGE_SIZE=None, NORMALIZATION=None,
    # optimization
    EPOCHS=40, BATCH_SIZE=32, LR=5e-4, WEIGHT_DECAY=1e-4, WARMUP_EPOCHS=3, PLATEAU_PATIENCE=10,
    PLATEAU_FACTOR=0.5, PATIENCE=20, SEED=42,
    # loss: Focal Tversky (the supervised term)
    FTL_ALPHA=0.30, FTL_BETA=0.70, FTL_GAMMA=0.75, BCE_WEIGHT=0.0,
    # system
    DEVICE="auto", PRECISION="auto", CHANNELS_LAST="auto", COMPILE="auto", NUM_WORKERS="auto", PRELOAD="auto",
    OUTPUT_DIR=None, RESUME=False, COST_TABLE=True,
)


def kd_constants() -> dict[str, Any]:
    """A fresh copy of kd.py's default constants (pass it to lib.config.load_constants with overrides)."""
    return dict(KD_DEFAULTS)
