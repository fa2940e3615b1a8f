"""Checkpoint safety: weights_only loading refuses code, mismatches name their keys."""
import pytest
import torch

from lib.checkpoint import FORMAT, CheckpointError, load_model, read_checkpoint, save_checkpoint
from lib.models.factory import build_model


class RunsCodeOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_crafted_pickle_is_refused_and_its_code_does_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": RunsCodeOnLoad(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load"):
        read_checkpoint(path)
    assert not marker.exists()


def checkpoint_for(model, name, args):
    return {"format": FORMAT, "model": {"name": name, "args": args}, "state_dict": model.state_dict()}


def test_round_trip_rebuilds_model(tmp_path):
    model = build_model("UnetLight", {"width": 4})
    save_checkpoint(checkpoint_for(model, "UnetLight", {"width": 4}), tmp_path / "ok.pt")
    rebuilt, _ = load_model(tmp_path / "ok.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


def test_shape_mismatch_names_the_keys(tmp_path):
    checkpoint = checkpoint_for(build_model("UnetLight", {"width": 4}), "UnetLight", {"width": 8})
    save_checkpoint(checkpoint, tmp_path / "shapes.pt")
    with pytest.raises(CheckpointError, match=r"shapes\.pt: weights do not fit.*shape mismatch.*bottleneck\.0\.weight \(8, 4, 3, 3\) vs \(16, 8, 3, 3\)"):
        load_model(tmp_path / "shapes.pt")


def test_architecture_mismatch_names_missing_and_unexpected_keys(tmp_path):
    checkpoint = checkpoint_for(build_model("MLP_256"), "UnetLight", {})
    save_checkpoint(checkpoint, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: .*unexpected keys: layers"):
        load_model(tmp_path / "arch.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a sar-kd-flood/1 checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
