"""int8 students: ONNX Runtime static quantization (QDQ), calibrated on training patches (export_onnx.py --int8).

    quantize_int8(float_onnx, int8_onnx, calibration_batches)      # writes *.int8.onnx with the float metadata
    compare(float_onnx, int8_onnx, data, constants, root)          # IoU on the validation split, throughput

Weights are int8 per output channel, activations uint8 per tensor (U8S8, the fast kernels of x86 CPUs),
ranges from MinMax calibration over the calibration patches. Operators ONNX Runtime has no int8 kernel
for (LayerNorm, GELU, Resize, ...) stay in float between a DequantizeLinear and a QuantizeLinear;
`float_operators` lists them. PSPMixer's int8-friendly variant (MIXER_ACTIVATION=relu, MIXER_NORM=batch,
its norms folded at export) leaves none of them (docs/distillation-methods.md#int8-students).
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lib.config import with_defaults
from lib.errors import DataError
from lib.bench.onnx_model import OnnxModel
from lib.bench.speed import timed_runs

CALIBRATION_PATCHES = 64
THROUGHPUT_BATCHES = (1, 32)
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def calibration_batches(dataset, patches: int = CALIBRATION_PATCHES, batch: int = 8) -> list[np.ndarray]:
    """`patches` images spread evenly over `dataset` (every band of it), in batches of float32 [B, 1, S, S]."""
    if len(dataset) == 0:
        raise DataError(f"no calibration patches: {getattr(dataset, 'root', '?')} holds none")
    items = np.unique(np.linspace(0, len(dataset) - 1, min(patches, len(dataset))).round().astype(int))
    images = [dataset[int(i)][0].float().numpy() for i in items]
    return [np.stack(images[i:i + batch]) for i in range(0, len(images), batch)]


def quantize_int8(float_path: Path, int8_path: Path, batches: list[np.ndarray]) -> Path:
    """Static QDQ quantization of `float_path` into `int8_path`, calibrated on `batches`; the float model's
    metadata is carried over, plus "quantization"."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)  # shapes + graph folding
        quantize_static(str(prepared), str(int8_path) + ".tmp", Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    proto = onnx.load(str(int8_path) + ".tmp")
    source = onnx.load(str(float_path), load_external_data=False)
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        proto.metadata_props.add().CopyFrom(entry)
    entry = proto.metadata_props.add()
    entry.key = "quantization"
    entry.value = (f'{{"method": "onnxruntime static QDQ", "weights": "int8 per channel", "activations": "uint8 per '
                   f'tensor", "calibration": "MinMax", "calibration_patches": {sum(len(b) for b in batches)}}}')
    onnx.save(proto, str(int8_path))
    Path(str(int8_path) + ".tmp").unlink()
    return int8_path


def float_operators(int8_path: Path) -> dict[str, int]:
    """Operator types of the int8 graph that compute in float: none of their inputs comes from a
    DequantizeLinear (QDQ marks the quantized operators by DequantizeLinear inputs and a QuantizeLinear output)."""
    import onnx
    graph = onnx.load(str(int8_path)).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    quantized_out = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    counts = Counter()
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        takes_int8 = any(name in dequantized for name in node.input)
        gives_int8 = any(name in quantized_out for name in node.output)
        if not (takes_int8 and gives_int8) and node.op_type not in ("Shape", "Reshape", "Transpose", "Flatten",
                                                                    "Concat", "Gather", "Unsqueeze", "Squeeze"):
            counts[node.op_type] += 1
    return dict(counts)


def onnx_seconds(model: OnnxModel, image_size: int, batch: int, max_seconds: float = 3.0) -> float:
    """Seconds of one onnxruntime pass over `batch` random images (the fastest of a few runs; the same input
    for every model, so int8 and float, or the points of pareto.py, are timed alike)."""
    images = np.random.default_rng(0).random((batch, 1, image_size, image_size), dtype=np.float32)
    return min(timed_runs(lambda: model.run_numpy(images), warmup=1, repeats=5, max_seconds=max_seconds, min_runs=2))


def cpu_seconds(model: OnnxModel, image_size: int, batch: int, repeats: int = 10) -> float:
    """CPU seconds of one onnxruntime pass (process time, the fastest of `repeats`). With a one-thread session
    this is the work of the pass alone: on a shared machine wall-clock timings also hold the time other
    processes had the cores (they varied 2-10x here), CPU time does not."""
    images = np.random.default_rng(0).random((batch, 1, image_size, image_size), dtype=np.float32)
    model.run_numpy(images)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        model.run_numpy(images)
        times.append(time.process_time() - start)
    return min(times)


def throughput(model: OnnxModel, image_size: int, batches=THROUGHPUT_BATCHES, max_seconds: float = 3.0,
               cpu_time: bool = False) -> dict:
    """Images per second through onnxruntime at each batch size (wall clock, or CPU time: cpu_seconds)."""
    if cpu_time:
        return {f"images_per_s_b{batch}": batch / cpu_seconds(model, image_size, batch) for batch in batches}
    return {f"images_per_s_b{batch}": batch / onnx_seconds(model, image_size, batch, max_seconds) for batch in batches}


def score(model: OnnxModel, dataset, bands, batch_size: int = 32) -> dict:
    """Validation metrics through `model` with lib.train.engine.evaluate (the metrics of training and evaluate.py)."""
    from lib.data.loader import make_loader
    from lib.train.engine import evaluate
    from lib.train.loss import supervised_loss
    c = with_defaults({"BATCH_SIZE": batch_size, "NUM_WORKERS": 0})
    loader = make_loader(dataset, c, False, torch.device("cpu"), None)
    loss, metrics = evaluate(model, loader, supervised_loss(c), bands, torch.device("cpu"), "fp32")
    return {"loss": loss, **metrics}
