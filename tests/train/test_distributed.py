"""torchrun: two CPU processes with gloo give the metrics and the loss of a single-process evaluation of the checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_constants
from lib.data.factory import build_datasets
from lib.data.loader import make_loader
from lib.train.engine import evaluate
from lib.train.loss import supervised_loss
from lib.checkpoint import load_model


def test_torchrun_two_processes_matches_single_process_evaluation(tiny_data, tmp_path):
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train_unetlight.py", "EPOCHS=2", f"DATA_ROOT={tiny_data}", f"OUTPUT_DIR={output}", "IMAGE_SIZE=64",
               "BATCH_SIZE=2", "NUM_WORKERS=0", "DEVICE=cpu", "WIDTH=4", "WARMUP_EPOCHS=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch") == 1  # only rank 0 prints
    summary = json.loads((output / "summary.json").read_text())
    assert summary["world_size"] == 2

    model, checkpoint = load_model(output / "best.pt")
    c = tiny_constants(tiny_data, output)
    _, val_set = build_datasets(c, log=lambda *a: None)
    loader = make_loader(val_set, {**c, "BATCH_SIZE": 3}, False, torch.device("cpu"), None)
    # in the run's precision and memory format: the BatchNorm statistics re-estimated before each validation
    # (lib/train/batchnorm.py, pooled over both processes) put pixels close enough to 0.5 that bf16 and fp32
    # may call a few of them differently
    if summary["channels_last"]:
        model.to(memory_format=torch.channels_last)
    val_loss, metrics = evaluate(model, loader, supervised_loss(c), ("VV", "VH"), torch.device("cpu"), summary["precision"])
    for key in ("iou_VV", "iou_VH", "iou", "f1_VV", "precision_VH", "accuracy_VV"):
        assert summary[f"val_{key}"] == pytest.approx(metrics[key], abs=1e-9), key
    # the loss too: per item, summed over both processes (3 items in shards of 2 + 1, batches of 2 vs 3)
    assert summary["val_loss"] == pytest.approx(val_loss, abs=1e-5)
