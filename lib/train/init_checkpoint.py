"""INIT_CHECKPOINT: start a run from the weights of an earlier run of the same architecture (fine-tuning,
e.g. a model pre-trained on the demo data, then trained on a few real chips).

Only the weights are taken: optimizer, schedule and counters start afresh, unlike RESUME. The checkpoint's
architecture, its arguments and its input (band-agnostic, or INPUT_BANDS as channels) must be the run's,
and a mismatch is one CheckpointError naming the checkpoint and what differs.
"""
from __future__ import annotations

from torch import nn

from lib.checkpoint import load_state, read_checkpoint
from lib.errors import CheckpointError


def load_init_checkpoint(model: nn.Module, path: str, model_name: str, model_args: dict, input_bands, log=print) -> str:
    """Load the weights of checkpoint `path` into `model`; returns what summary.json records."""
    checkpoint = read_checkpoint(path)
    spec = checkpoint.get("model", {})
    if spec.get("name") != model_name or dict(spec.get("args") or {}) != dict(model_args):
        raise CheckpointError(f"INIT_CHECKPOINT {path}: a {spec.get('name')} {spec.get('args')} checkpoint, but this "
                              f"run trains {model_name} {model_args}; give a checkpoint of the same architecture")
    recorded = (checkpoint.get("data") or {}).get("input_bands")
    if list(recorded or []) != list(input_bands or []):
        raise CheckpointError(f"INIT_CHECKPOINT {path}: trained with INPUT_BANDS={'+'.join(recorded) if recorded else None}, "
                              f"this run has INPUT_BANDS={'+'.join(input_bands) if input_bands else None}")
    load_state(model, checkpoint["state_dict"], f"INIT_CHECKPOINT {path}")
    log(f"weights from INIT_CHECKPOINT {path} (epoch {checkpoint.get('epoch', '?')}); optimizer and schedule start afresh")
    return str(path)
