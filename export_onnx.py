"""Export a checkpoint to ONNX (dynamic batch axis) and check it against PyTorch with onnxruntime.

    python export_onnx.py runs/pspmixer/best.pt                   # writes runs/pspmixer/best.onnx
    python export_onnx.py runs/unetlight/best.pt unetlight.onnx --opset 17 --tolerance 1e-4

Input "image": float32 [batch, 1, S, S], the band normalized to [0, 1] exactly as in training (clip to
the checkpoint's range, scale); S is the checkpoint's image_size. Output "logits": [batch, 1, S, S]
(water where logit >= 0). The normalization table, bands, image size and model spec are stored in the
ONNX metadata (keys "model", "data"). Uses the TorchScript-based exporter (torch.onnx.export with
dynamo=False): the dynamo exporter needs onnxscript, which this environment does not have.

PSPNet's pyramid pooling (adaptive average pooling to 1, 2, 3, 6 cells of a map whose side they do not
all divide) has no ONNX equivalent in that exporter; for the export it is replaced by the same averages
written as two matrix products, exact for the fixed input size.

The check runs the ONNX model on random inputs at batch 1 and 3, prints the maximum absolute logit
difference to PyTorch and exits with status 1 if it is above --tolerance.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.checkpoint import CheckpointError, load_model

OPSET = 17
TOLERANCE = 1e-4             # maximum absolute difference of the logits, ONNX Runtime vs PyTorch
CHECK_BATCHES = (1, 3)       # batch sizes the check runs (the export itself uses batch 2)


class FixedAdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d for one input size, as P_h @ x @ P_w^T with the exact averaging matrices."""

    def __init__(self, input_size: tuple[int, int], output_size: tuple[int, int]):
        super().__init__()
        self.input_size = tuple(input_size)
        self.register_buffer("rows", self.matrix(input_size[0], output_size[0]), persistent=False)
        self.register_buffer("cols", self.matrix(input_size[1], output_size[1]).T.contiguous(), persistent=False)

    @staticmethod
    def matrix(n: int, out: int) -> torch.Tensor:
        """[out, n]: row i averages input cells floor(i*n/out) .. ceil((i+1)*n/out) - 1, as PyTorch does."""
        weights = torch.zeros(out, n)
        for i in range(out):
            start, end = (i * n) // out, -(-((i + 1) * n) // out)
            weights[i, start:end] = 1.0 / (end - start)
        return weights

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"built for {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return self.rows @ x @ self.cols


class PyramidPoolBlock(nn.Module):
    """smp's PSPBlock for export: pool (exact, fixed size), its 1x1 conv block, bilinear upsampling back.
    (smp's own export branch uses F.interpolate(mode="area"), which fails in the same way.)"""

    def __init__(self, pool: nn.Module, conv: nn.Module):
        super().__init__()
        self.pool, self.conv = pool, conv

    def forward(self, x):
        height, width = x.shape[2:]
        return F.interpolate(self.conv(self.pool(x)), size=(height, width), mode="bilinear", align_corners=True)


def exportable(model: nn.Module, image_size: int, in_channels: int = 1) -> nn.Module:
    """A copy of `model` in which every adaptive average pool whose output does not divide its input
    (not exportable by the TorchScript exporter) is replaced by FixedAdaptiveAvgPool2d; smp PSPBlocks,
    which switch to F.interpolate(mode="area") under export, become PyramidPoolBlock."""
    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: sizes.__setitem__(name, (args[0].shape[-2:], out.shape[-2:])))
             for name, module in model.named_modules() if isinstance(module, nn.AdaptiveAvgPool2d)]
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    for hook in hooks:
        hook.remove()
    for name, ((h, w), (oh, ow)) in sizes.items():
        if h % oh or w % ow:
            replace(model, name, FixedAdaptiveAvgPool2d((h, w), (oh, ow)).to(device))
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "PSPBlock" and isinstance(getattr(module, "pool", None), nn.Sequential):
            replace(model, name, PyramidPoolBlock(module.pool[0], module.pool[1]))
    return model


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def export(model: nn.Module, checkpoint: dict, output: Path, opset: int = OPSET) -> Path:
    """Write `model` (from `checkpoint`) to `output` with a dynamic batch axis and the metadata."""
    import onnx
    size = int(checkpoint["data"].get("image_size", 256))
    model = exportable(model.cpu(), size)
    dummy = torch.rand(2, 1, size, size)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks that are constant for a fixed size
        torch.onnx.export(model, (dummy,), str(output), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(str(output))
    onnx.checker.check_model(proto)
    for key, value in (("model", checkpoint["model"]), ("data", checkpoint["data"]),
                       ("input", "image: float32 [batch, 1, S, S], band normalized to [0, 1] with data.normalization"),
                       ("output", "logits: float32 [batch, 1, S, S]; water where logit >= 0")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(output))
    return output


def check(model: nn.Module, onnx_path: Path, image_size: int, batches=CHECK_BATCHES, seed: int = 0) -> float:
    """Maximum absolute logit difference between ONNX Runtime (CPU) and PyTorch on random [0, 1] inputs."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    model = model.cpu().eval()
    worst = 0.0
    for batch in batches:
        x = torch.rand(batch, 1, image_size, image_size, generator=generator)
        with torch.no_grad():
            reference = model(x).numpy()
        result = session.run(["logits"], {"image": x.numpy()})[0]
        if result.shape != reference.shape:
            raise RuntimeError(f"ONNX output shape {result.shape} != PyTorch {reference.shape} at batch {batch}")
        worst = max(worst, float(np.abs(result - reference).max()))
    return worst


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path, nargs="?", help="ONNX file (default: the checkpoint with .onnx)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest allowed absolute logit difference (default {TOLERANCE:g})")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    output = args.output or args.checkpoint.with_suffix(".onnx")
    try:
        model, checkpoint = load_model(args.checkpoint, "cpu")
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    size = int(checkpoint["data"].get("image_size", 256))
    export(model, checkpoint, output, args.opset)
    difference = check(model, output, size)
    ok = difference <= args.tolerance
    print(f"{checkpoint['model']['name']}: wrote {output} ({output.stat().st_size / 1e6:.2f} MB, opset {args.opset}, "
          f"input [batch, 1, {size}, {size}]); ONNX Runtime vs PyTorch at batch {', '.join(map(str, CHECK_BATCHES))}: "
          f"max abs logit difference {difference:.3g} ({'ok' if ok else 'FAILED'}, tolerance {args.tolerance:g})")
    if not ok:
        raise SystemExit(1)
    return {"output": str(output), "max_abs_diff": difference, "tolerance": args.tolerance}


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
