"""Export a checkpoint to ONNX (dynamic batch axis) and check it against PyTorch with onnxruntime.

    python export_onnx.py runs/pspmixer/best.pt                   # writes runs/pspmixer/best.onnx
    python export_onnx.py runs/unetlight/best.pt unetlight.onnx --opset 17 --tolerance 1e-4

Input "image": float32 [batch, 1, S, S], the band normalized to [0, 1] exactly as in training (clip to
the checkpoint's range, scale); S is the checkpoint's image_size. Output "logits": [batch, 1, S, S]
(water where logit >= 0). The normalization table, bands, image size and model spec are stored in the
ONNX metadata (keys "model", "data", "constants", "epoch"). Uses the TorchScript-based exporter (torch.onnx.export with
dynamo=False): the dynamo exporter needs onnxscript, which this environment does not have.

PSPNet's pyramid pooling (adaptive average pooling to 1, 2, 3, 6 cells of a map whose side they do not
all divide) has no ONNX equivalent in that exporter; for the export it is replaced by the same averages
written as two matrix products, exact for the fixed input size. A PSPMixer with MIXER_NORM=batch is
exported with its batch norms folded into the layers after them (PSPMixer.fold_norms; the same logits).

The check runs the ONNX model on random inputs at batch 1 and 3, prints the maximum absolute logit
difference to PyTorch and exits with status 1 if it is above --tolerance.

    python export_onnx.py runs/unetlight/best.pt --int8            # also runs/unetlight/best.int8.onnx
    python export_onnx.py runs/pspmixer/best.pt --int8 --calibration 128 --data-root 02_kfold

--int8 adds an ONNX Runtime static quantization (QDQ; int8 weights per channel, uint8 activations)
calibrated on --calibration training patches of the checkpoint's data (its DATA_ROOT, or --data-root),
written beside the float model as *.int8.onnx, and reports on the validation split the IoU of the float
and the int8 model (through onnxruntime, the metrics of evaluate.py), their throughput at batch 1 and
32 on this CPU (wall clock; --cpu-time: one thread, CPU time, steady on a shared machine), and the
operators that stay in float (lib/bench/quantize.py). evaluate.py and predict.py take
either .onnx file like a checkpoint.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.checkpoint import load_model, same_file
from lib.data.factory import checkpoint_dataset
from lib.errors import DataError, OutputError
from lib.bench.onnx_model import OnnxModel
from lib.bench.quantize import CALIBRATION_PATCHES, calibration_batches, float_operators, quantize_int8, score, throughput

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
    if hasattr(model, "fold_norms"):  # PSPMixer norm="batch": no norm operator left to stay in float under int8
        model = model.fold_norms()
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
    size, channels = int(checkpoint["data"].get("image_size", 256)), input_channels(checkpoint)
    model = exportable(model.cpu(), size, channels)
    dummy = torch.rand(2, channels, size, size)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks that are constant for a fixed size
        torch.onnx.export(model, (dummy,), str(output), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(str(output))
    onnx.checker.check_model(proto)
    for key, value in (("model", checkpoint["model"]), ("data", checkpoint["data"]),
                       ("constants", checkpoint.get("constants") or {}), ("epoch", checkpoint.get("epoch")),
                       ("input", f"image: float32 [batch, {channels}, S, S], "
                                 + (f"bands {'+'.join(checkpoint['data']['input_bands'])} stacked, each"
                                    if channels > 1 else "band") + " normalized to [0, 1] with data.normalization"),
                       ("output", "logits: float32 [batch, 1, S, S]; water where logit >= 0")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, default=str)
    onnx.save(proto, str(output))
    return output


def input_channels(checkpoint: dict) -> int:
    """The model's input channels: its stacked bands (INPUT_BANDS), else 1."""
    return len(checkpoint["data"].get("input_bands") or ()) or 1


def check(model: nn.Module, onnx_path: Path, image_size: int, batches=CHECK_BATCHES, seed: int = 0,
          channels: int = 1) -> float:
    """Maximum absolute logit difference between ONNX Runtime (CPU) and PyTorch on random [0, 1] inputs."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    model = model.cpu().eval()
    worst = 0.0
    for batch in batches:
        x = torch.rand(batch, channels, image_size, image_size, generator=generator)
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
    parser.add_argument("--int8", action="store_true", help="also write a statically quantized *.int8.onnx and report it")
    parser.add_argument("--calibration", type=int, default=CALIBRATION_PATCHES, metavar="N",
                        help=f"training patches the int8 ranges are calibrated on (default {CALIBRATION_PATCHES})")
    parser.add_argument("--data-root", type=Path, help="dataset root for calibration and the report "
                                                       "(default: the checkpoint's DATA_ROOT)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time --int8's throughput on one thread in CPU time (a shared machine; see lib/bench/quantize.py)")
    args = parser.parse_args(argv)
    if args.calibration < 1:
        parser.error(f"--calibration {args.calibration}: needs at least 1 patch")
    return args


def int8_report(output: Path, checkpoint: dict, data_root: Path | None, calibration: int, cpu_time: bool = False) -> dict:
    """Quantize `output` into *.int8.onnx (calibrated on training patches) and compare float and int8 on the
    validation split: IoU per band and mean, throughput at batch 1 and 32, operators left in float."""
    data, constants = checkpoint["data"], checkpoint.get("constants") or {}
    root = Path(data_root or constants.get("DATA_ROOT") or "02_kfold")
    if not root.is_dir():
        raise DataError(f"--int8: data root {root} does not exist; calibration needs the training patches "
                        f"(pass --data-root)")
    int8_path = int8_path_of(output)
    calibration_set = checkpoint_dataset(data, constants, root, "train", data.get("train_bands") or ["VV"])
    quantize_int8(output, int8_path, calibration_batches(calibration_set, calibration))
    bands = list(data.get("val_bands") or ["VV"])
    val_set = checkpoint_dataset(data, constants, root, "val", bands)
    size = int(data.get("image_size", 256))
    rows = {}
    for label, path in (("float", output), ("int8", int8_path)):
        model = OnnxModel(path)
        rows[label] = {"path": str(path), "megabytes": path.stat().st_size / 1e6, **score(model, val_set, bands),
                       **throughput(OnnxModel(path, threads=1) if cpu_time else model, size, cpu_time=cpu_time)}
    report = {"int8_path": str(int8_path), "data_root": str(root), "calibration_patches": calibration, "bands": bands,
              "float_operators": float_operators(int8_path), "timing": "1 thread, CPU time" if cpu_time else "wall clock",
              **rows,
              "iou_drop": rows["float"]["iou"] - rows["int8"]["iou"],
              "speedup_b1": rows["int8"]["images_per_s_b1"] / rows["float"]["images_per_s_b1"],
              "speedup_b32": rows["int8"]["images_per_s_b32"] / rows["float"]["images_per_s_b32"]}
    print(render_int8(report, checkpoint["model"]["name"], len(val_set)))
    return report


def render_int8(report: dict, name: str, items: int) -> str:
    bands = report["bands"]
    lines = [f"{name} int8 ({report['calibration_patches']} calibration patches of {report['data_root']}/train), "
             f"validation split: {items} items",
             f"{'model':<6} {'MB':>6} " + " ".join(f"{'IoU ' + b:>8}" for b in bands) + f" {'IoU mean':>8} "
             f"{'img/s b1':>9} {'img/s b32':>9}"]
    for label in ("float", "int8"):
        row = report[label]
        lines.append(f"{label:<6} {row['megabytes']:6.2f} " + " ".join(f"{row[f'iou_{b}']:8.4f}" for b in bands)
                     + f" {row['iou']:8.4f} {row['images_per_s_b1']:9.1f} {row['images_per_s_b32']:9.1f}")
    floats = ", ".join(f"{op} x{n}" for op, n in sorted(report["float_operators"].items())) or "none"
    lines.append(f"IoU drop {report['iou_drop']:+.4f}; int8 / float throughput {report['speedup_b1']:.2f}x at batch 1, "
                 f"{report['speedup_b32']:.2f}x at batch 32 ({report['timing']}); operators left in float: {floats}")
    lines.append(f"wrote {report['int8_path']}")
    return "\n".join(lines)


def int8_path_of(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".onnx") + ".int8.onnx")


def check_outputs(checkpoint: Path, output: Path, int8: bool) -> None:
    """Refuse, before any work, an output that is the checkpoint itself, a folder, or another file that is
    not an ONNX model (a torch checkpoint is a zip archive): an earlier export is the only thing replaced."""
    for path in (output, int8_path_of(output)) if int8 else (output,):
        if same_file(path, checkpoint):
            raise OutputError(f"{path}: the ONNX output is the checkpoint {checkpoint} itself; it would be "
                              f"replaced; give another output path")
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give an ONNX file path")
        if path.is_file() and zipfile.is_zipfile(path):
            raise OutputError(f"{path}: exists and is not an ONNX model (a zip archive, e.g. a checkpoint); "
                              f"it would be replaced; give another output path")


def main(argv=None) -> dict:
    args = parse_args(argv)
    output = args.output or args.checkpoint.with_suffix(".onnx")
    check_outputs(args.checkpoint, output, args.int8)
    model, checkpoint = load_model(args.checkpoint, "cpu")
    size = int(checkpoint["data"].get("image_size", 256))
    export(model, checkpoint, output, args.opset)
    difference = check(model, output, size, channels=input_channels(checkpoint))
    ok = difference <= args.tolerance
    print(f"{checkpoint['model']['name']}: wrote {output} ({output.stat().st_size / 1e6:.2f} MB, opset {args.opset}, "
          f"input [batch, {input_channels(checkpoint)}, {size}, {size}]); ONNX Runtime vs PyTorch at batch {', '.join(map(str, CHECK_BATCHES))}: "
          f"max abs logit difference {difference:.3g} ({'ok' if ok else 'FAILED'}, tolerance {args.tolerance:g})")
    if not ok:
        raise SystemExit(1)
    result = {"output": str(output), "max_abs_diff": difference, "tolerance": args.tolerance}
    if args.int8:
        result["int8"] = int8_report(output, checkpoint, args.data_root, args.calibration, args.cpu_time)
    return result


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
