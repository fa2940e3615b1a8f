"""ONNX models (export_onnx.py, float or int8) used where checkpoints are: evaluate.py, predict.py.

    model, checkpoint = load_model_any("runs/unetlight/best.int8.onnx")   # or a best.pt
    logits = model(images)             # torch [B, 1, S, S] float32 in, logits out, through onnxruntime

For a .onnx file `checkpoint` holds what export_onnx.py stored in the ONNX metadata: "model" (name,
args), "data" (bands, normalization, image size; the same keys as a checkpoint's), and "constants" and
"quantization" where present.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lib.checkpoint import load_model
from lib.errors import CheckpointError


class OnnxModel:
    """A torch-like callable over an onnxruntime session: tensors in, logit tensors out (on the input's
    device), eval()/train()/to() accepted so that lib.train.engine.evaluate and lib.mapping.tiling use it unchanged."""

    training = False

    def __init__(self, path: Path | str, providers=("CPUExecutionProvider",), threads: int | None = None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().contiguous().cpu().numpy()
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(logits)).to(images.device)

    def run_numpy(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: images})[0]

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self  # onnxruntime runs on its own (CPU) memory, in its own layout

    def parameters(self):
        return iter(())


def onnx_metadata(path: Path | str) -> dict:
    """The JSON metadata export_onnx.py writes ("model", "data", ...), parsed; text values stay text."""
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others for a file that is not a model
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from None
    metadata = {}
    for entry in proto.metadata_props:
        try:
            metadata[entry.key] = json.loads(entry.value)
        except ValueError:
            metadata[entry.key] = entry.value
    return metadata


def load_onnx(path: Path | str) -> tuple[OnnxModel, dict]:
    """(OnnxModel, checkpoint-like dict) of an ONNX file written by export_onnx.py."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    metadata = onnx_metadata(path)
    missing = [key for key in ("model", "data") if not isinstance(metadata.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path}: the ONNX metadata lacks {' and '.join(missing)} (data settings); "
                              f"export it again with `python export_onnx.py CHECKPOINT`")
    try:
        model = OnnxModel(path)
    except Exception as error:  # onnxruntime's own error types
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: {error})") from None
    checkpoint = {"format": "onnx", "model": metadata["model"], "data": metadata["data"],
                  "constants": metadata.get("constants") or {}, "epoch": metadata.get("epoch"),
                  "quantization": metadata.get("quantization")}
    return model, checkpoint


def load_model_any(path: Path | str, device: str | torch.device = "cpu"):
    """(callable model, checkpoint dict) of a checkpoint (.pt: lib.checkpoint.load_model) or an ONNX file
    (.onnx: onnxruntime on the CPU, whatever `device`; outputs come back on the input's device)."""
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path)
    return load_model(path, device)
