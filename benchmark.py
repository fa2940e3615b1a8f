"""Benchmark every architecture of lib.model.MODELS, and whole-scene inference with the predict.py engine.

    python benchmark.py                                   # full run, writes docs/benchmark.md (minutes on a CPU)
    python benchmark.py --models UnetLight PSPMixer-kd --scene-size 4000
    python benchmark.py --quick --output /tmp/bench.md     # tiny configuration, a few seconds per model
    python benchmark.py --train                            # speed: fp32 eager vs optimized, writes docs/speed.md

Per model (default configuration; PSPMixer twice: the train_pspmixer.py default and the kd.py student):
parameters held and used in the forward pass (lib.model.parameter_counts), FLOPs of one forward pass on one
IMAGE_SIZE x IMAGE_SIZE patch counted by torch.utils.flop_counter.FlopCounterMode (a multiply-add counts
as 2 FLOPs, as torch counts; only matmul/conv/attention-type ops are counted, not normalization,
activations or resampling), CPU latency at batch 1 (median ms) and throughput at batch BATCH_SIZE (median
images/s), after warm-up, with torch's intra-op thread count stated, and peak memory: the rise of the
process's peak resident set size (VmHWM, reset through /proc/self/clear_refs before each phase) above the
resident size with the model loaded, so it is what the forward passes need (activations, workspace).
Each model runs in a fresh subprocess (unless --in-process), so one model's freed heap cannot hide the
next one's. The same on CUDA when it is available (torch.cuda.max_memory_allocated above the weights).

Whole scene: megapixels per second of lib.inference.predict_file (what predict.py runs: GeoTIFF read by
windows, tiles of IMAGE_SIZE with IMAGE_SIZE/4 overlap, blending, mask GeoTIFF written by windows,
quick-look PNG) on a synthetic SCENE_SIZE x SCENE_SIZE float32 GeoTIFF in a temporary folder, for the
teacher and the students, with the peak resident memory of that process (whole process, and the rise
during the prediction). Models are randomly initialized: speed does not depend on the weights.

--train (lib/speed.py): for every model, parameters held and used, FLOPs and activation bytes per patch,
training samples/s at its script's batch size and inference images/s at batch 1 and BATCH_SIZE, each in
float32 eager and in the fastest configuration found (lib.speed.CONFIGS: bf16 autocast, channels_last,
torch.compile; int8 dynamic quantization for inference where a model has Linear layers), with the ratio,
beside the measured matmul and convolution peaks of the machine in float32 and bfloat16 and each model's
fraction of them, and the share of each step spent in matrix products and convolutions (torch.profiler);
then the data pipeline (loading + augmentation alone) against the fastest student's training step.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lib.model import MODELS, build_model, parameter_counts
from lib.speed import timed_runs

IMAGE_SIZE = 256
BATCH_SIZE = 32              # throughput batch
WARMUP = 3                   # untimed runs before timing (batch 1; 1 run at BATCH_SIZE)
REPEATS = 10                 # timed runs at batch 1; at BATCH_SIZE, REPEATS // 2 (at least 3, 1 with --quick)
MAX_SECONDS = 60.0           # stop timing a phase after this long once 3 runs are in
SCENE_SIZE = 10_000          # side of the synthetic whole scene
SCENE_MODELS = ("PSPNet", "UnetLight", "PSPMixer", "PSPMixer-kd")
SCENE_BATCH = 8              # tiles per forward pass in the scene run (predict.py's default on CPU)
OUTPUT = "docs/benchmark.md"
SPEED_OUTPUT = "docs/speed.md"
COMPILE_BELOW_S = 5.0       # --train tries torch.compile on models whose float32 training step takes less
SCRIPT_BATCH = {"FCN_VGG16": 16, "FCN_VGG19": 16, "UNet_Classic": 16, "DeepUNet": 16, "HRNet": 16}  # others: 32

# PSPMixer configurations: the train_pspmixer.py default and the kd.py student
PSPMIXER_CONFIGS = {"PSPMixer": {"patch": 16, "hidden": 48, "depth": 3},
                    "PSPMixer-kd": {"patch": 32, "hidden": 128, "depth": 3, "tokens_mlp": 64, "channels_mlp": 256}}


MALLOC_NOTES = {
    "tuned": "glibc malloc told to keep freed memory for reuse (`lib.runtime.keep_freed_memory`, as predict.py "
             "and the training engine do on CPU). With glibc's defaults large activations are unmapped after every forward pass and "
             "page-faulted in again, which made batch-32 CPU throughput 2-4x lower here (`--malloc default`).",
    "default": "glibc malloc with its default settings (`--malloc default`): large activations are unmapped after "
               "every forward pass and page-faulted in again, which costs big batches a lot on CPU; predict.py "
               "uses `--malloc tuned` behaviour.",
}


def configurations() -> dict[str, tuple[str, dict]]:
    """label -> (MODELS name, args): every registered architecture with its default arguments."""
    configs = {}
    for name in MODELS:
        if name == "PSPMixer":
            for label, args in PSPMIXER_CONFIGS.items():
                configs[label] = (name, dict(args))
        else:
            configs[name] = (name, {})
    return configs


def model_args(name: str, args: dict, image_size: int) -> dict:
    return {**args, "image_size": image_size} if name == "PSPMixer" else dict(args)


# ------------------------------------------------------------------------------------------- memory

def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Release freed heap to the OS, reset the peak RSS to the current RSS; returns the current RSS (KiB)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return rss_kib()


def peak_rise_mib(base_kib: int) -> float:
    return (rss_kib("VmHWM") - base_kib) / 1024


def peak_reset_supported() -> bool:
    try:
        reset_peak()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ timing

def batch_plan(latency_s: float, batch: int, o: dict) -> tuple[int, int]:
    """(warm-up runs, minimum timed runs) at the big batch: 1 and 3, unless one batch would take more than
    a third of MAX_SECONDS (the big CPU models): then no warm-up (batch 1 has warmed the kernels) and 1 run."""
    if latency_s * batch > o["max_seconds"] / 3:
        return 0, 1
    return 1, 3


def count_flops(model, image_size: int, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 1, image_size, image_size, device=device))
    return float(counter.get_total_flops())


def measure_model(label: str, name: str, args: dict, o: dict) -> dict:
    """Every number of one table row (o: image_size, batch_size, warmup, repeats, max_seconds, cuda)."""
    torch.manual_seed(0)
    size, batch = o["image_size"], o["batch_size"]
    row = {"label": label, "model": name, "args": args}
    try:
        model = build_model(name, model_args(name, args, size)).eval()
    except Exception as error:  # noqa: BLE001 - a model that cannot be built gets a row saying so
        return {**row, "error": f"{type(error).__name__}: {error}"}
    row.update(parameter_counts(model, size))
    row["gflops"] = count_flops(model, size, "cpu") / 1e9
    single = torch.rand(1, 1, size, size)
    full = torch.rand(batch, 1, size, size)
    repeats_full = o["repeats_full"]
    with torch.inference_mode():
        base = reset_peak()
        times = timed_runs(lambda: model(single), o["warmup"], o["repeats"], o["max_seconds"])
        row.update(cpu_latency_ms=1e3 * statistics.median(times), cpu_latency_min_ms=1e3 * min(times),
                   cpu_latency_runs=len(times), cpu_peak_b1_mib=peak_rise_mib(base))
        base = reset_peak()
        warmup, min_runs = batch_plan(row["cpu_latency_ms"] / 1e3, batch, o)
        times = timed_runs(lambda: model(full), warmup, repeats_full, o["max_seconds"], min_runs=min_runs)
        row.update(cpu_throughput=batch / statistics.median(times), cpu_throughput_max=batch / min(times),
                   cpu_throughput_runs=len(times),
                   cpu_throughput_warmup=warmup, cpu_peak_mib=peak_rise_mib(base))
    if o["cuda"] and torch.cuda.is_available():
        row.update(measure_cuda(model, size, batch, o, repeats_full))
    return row


def measure_cuda(model, size: int, batch: int, o: dict, repeats_full: int) -> dict:
    device = torch.device("cuda")
    model = model.to(device)
    single, full = torch.rand(1, 1, size, size, device=device), torch.rand(batch, 1, size, size, device=device)
    sync = torch.cuda.synchronize
    result = {"cuda_device": torch.cuda.get_device_name(device)}
    with torch.inference_mode():
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        times = timed_runs(lambda: model(single), o["warmup"], o["repeats"], o["max_seconds"], sync)
        result["cuda_latency_ms"] = 1e3 * statistics.median(times)
        times = timed_runs(lambda: model(full), 2, repeats_full, o["max_seconds"], sync)
        result["cuda_throughput"] = batch / statistics.median(times)
        result["cuda_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    model.cpu()
    return result


# ----------------------------------------------------------------------------------------- the scene

def write_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A float32 GeoTIFF of synthetic VV backscatter in dB (speckled land, dark meandering water, a NaN
    no-data corner), written by strips (EPSG:32630, 10 m pixels)."""
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(seed)
    strip = 256
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1, dtype="float32", nodata=float("nan"),
                       crs="EPSG:32630", transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_500_000.0),
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER") as dataset:
        for row0 in range(0, size, strip):
            rows = min(strip, size - row0)
            y = np.arange(row0, row0 + rows, dtype=np.float32)[:, None]
            river = np.abs(y - size / 2 - 0.15 * size * np.sin(x / (0.11 * size + 1))) < 0.02 * size + 3
            lakes = np.sin(x / 97.0) * np.cos(y / 131.0) > 0.8
            water = river | lakes
            vv = np.where(water, -20.0, -9.0).astype(np.float32)
            vv += 10 * np.log10(rng.gamma(4.0, 0.25, size=(rows, size)).astype(np.float32))
            vv[: max(0, min(rows, size // 20 - row0)), : size // 20] = np.nan
            dataset.write(vv, 1, window=rasterio.windows.Window(0, row0, size, rows))
    return path


def measure_scene(label: str, name: str, args: dict, scene: Path, o: dict) -> dict:
    from lib.bands import SAR_DB_RANGE
    from lib.inference import predict_file
    torch.manual_seed(0)
    size = o["image_size"]
    model = build_model(name, model_args(name, args, size)).eval()
    data = {"val_bands": ["VV"], "normalization": {"VV": list(SAR_DB_RANGE)}, "image_size": size}
    device = "cuda" if o.get("scene_cuda") and torch.cuda.is_available() else "cpu"
    model.to(device)
    with tempfile.TemporaryDirectory() as folder:
        base = reset_peak()
        summary = predict_file(model, data, scene, Path(folder) / "mask.tif", tile=size, overlap=size // 4,
                               batch_size=o["scene_batch"], quicklook_path=Path(folder) / "mask.png", device=device,
                               progress=False)
        rise = peak_rise_mib(base)
    return {"label": label, "model": name, "device": device, "scene": summary["height"], "tiles": summary["tiles"],
            "tile": summary["tile"], "overlap": summary["overlap"], "seconds": summary["seconds"],
            "megapixels_per_s": summary["megapixels_per_s"], "peak_rise_mib": rise,
            "peak_process_mib": rss_kib("VmHWM") / 1024, "water_fraction": summary["water_fraction"]}


# ------------------------------------------------------------------------------------------ speed (--train)

def best_of(rates: dict) -> tuple[str, float]:
    """(configuration, rate) of the fastest configuration measured, the fp32 baseline included."""
    name = max(rates, key=lambda k: rates[k])
    return name, rates[name]


def measure_speed(label: str, name: str, args: dict, o: dict) -> dict:
    """One row of the speed table: every configuration of lib.speed.CONFIGS, training and inference."""
    from lib import speed
    device = torch.device("cuda" if o["cuda"] and torch.cuda.is_available() else "cpu")
    size, batch = o["image_size"], o["batch_size"]
    train_batch = o.get("train_batch") or SCRIPT_BATCH.get(name, 32)
    configs = [c for c in speed.CONFIGS if o["compile"] or not speed.CONFIGS[c][2]]
    # two warm-up steps (the first compiles, where compiling), then up to 5 timed ones within 20 s
    timing = {"warmup": min(o["warmup"], 2), "repeats": min(o["repeats"], 5), "max_seconds": min(o["max_seconds"], 20)}

    def fresh():
        torch.manual_seed(0)
        return build_model(name, model_args(name, args, size))

    model = fresh().eval()
    row = {"label": label, "model": name, "args": args, "device": str(device), "train_batch": train_batch,
           **parameter_counts(model, size), "gflops": count_flops(model, size, "cpu") / 1e9,
           "activation_mib": speed.activation_bytes(model, size, torch.device("cpu")) / 2**20,
           "train": {}, "infer_b1": {}, "infer_batch": {}}
    for config in configs:
        if speed.CONFIGS[config][2] and row["train"]["fp32 eager"] < train_batch / o["compile_below_s"]:
            continue  # compiling a big model takes minutes, and compute-bound convolutions gain little from it
        row["train"][config] = speed.train_rate(fresh(), config, train_batch, size, device, **timing)
        row["infer_b1"][config] = speed.inference_rate(fresh(), config, 1, size, device, **timing)
        row["infer_batch"][config] = speed.inference_rate(fresh(), config, batch, size, device, **timing)
        print(f"    {label} {config}: train {row['train'][config]:.1f}/s, infer b1 {row['infer_b1'][config]:.1f}/s, "
              f"b{batch} {row['infer_batch'][config]:.1f}/s", file=sys.stderr, flush=True)
    if device.type == "cpu":  # where the time goes: profiler self time is the op's time only on the CPU
        row["accelerated_share"] = {
            f"{kind} {config}": speed.accelerated_share(step(fresh(), config, n, size, device))
            for kind, step, n in (("train", speed.train_step, train_batch), ("infer", speed.inference_step, batch))
            for config in ("fp32 eager", "bf16 + channels_last")}
    quantized = speed.int8_dynamic(fresh()) if device.type == "cpu" else None
    if quantized is not None:
        for key, n in (("infer_b1", 1), ("infer_batch", batch)):
            images = torch.rand(n, 1, size, size)
            with torch.inference_mode():
                row[key]["int8 dynamic (Linear)"] = n / speed.timed(lambda: quantized(images), device, **timing)
    return row


def data_pipeline(o: dict, student_rate: float) -> dict:
    """Loading + augmenting alone (the engine's dataset and augmentation over a demo split), against the
    training rate of the fastest student."""
    from lib import speed
    from lib.augmentation import train_augmentation
    from lib.dataset import BandPatchDataset
    from lib.demo_data import make_demo_dataset
    with tempfile.TemporaryDirectory(prefix="benchmark_data_") as folder:
        make_demo_dataset(Path(folder), n_train=64, n_val=4, seed=0, size=o["image_size"])
        dataset = BandPatchDataset(folder, "train", ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), train=True,
                                   transform=train_augmentation(0), image_size=o["image_size"], preload="auto")
        rate = speed.data_pipeline_rate(dataset, 32, workers=0, samples=64 if o["quick"] else 4096)
    return {"data_rate": rate, "student_rate": student_rate, "ratio": rate / student_rate if student_rate else None}


def run_speed(labels: list[str], configs: dict, o: dict, environment: dict) -> dict:
    from lib import speed
    device = torch.device("cuda" if o["cuda"] and torch.cuda.is_available() else "cpu")
    n, side, seconds = (256, 16, 0.2) if o["quick"] else (2048, 64, 2.0)
    peaks = {f"{kind} {name}": measure(dtype, device, seconds=seconds, **size)
             for kind, measure, size in (("matmul", speed.matmul_peak_gflops, {"n": n}),
                                         ("conv", speed.conv_peak_gflops, {"side": side}))
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name in ("fp32", "bf16"):  # the ceiling of a number format: the faster of its two kernel families
        peaks[name] = max(peaks[f"matmul {name}"], peaks[f"conv {name}"])
    print("peaks on " + str(device) + ": " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + " GFLOP/s", flush=True)
    def status(row):
        config, rate = best_of(row["train"])
        return f"train {row['train']['fp32 eager']:.1f} -> {rate:.1f} samples/s ({config})"

    rows = measure_each("speed", labels, configs, o, measure_speed, status)
    students = [r for r in rows if "error" not in r and r["model"] in ("PSPMixer", "UnetLight")]
    fastest = max((best_of(r["train"])[1] for r in students), default=0.0)
    pipeline = data_pipeline(o, fastest)
    environment["load_end"] = os.getloadavg()[0]
    return {"peaks": peaks, "device": str(device), "rows": rows, "pipeline": pipeline}


def render_speed(result: dict, o: dict, environment: dict) -> str:
    peaks, rows, pipeline = result["peaks"], result["rows"], result["pipeline"]
    size, batch = o["image_size"], o["batch_size"]
    peak_for = lambda config: peaks["fp32" if config.startswith("fp32") or config.startswith("int8") else "bf16"]  # noqa: E731
    lines = [
        "# Speed: float32 eager against the fastest configuration",
        "",
        f"Written by `python benchmark.py{' ' + o['command'] if o['command'] else ''}` on {environment['date']}. "
        f"Machine: {environment['cpu']}, {environment['cores']} cores, {environment['threads']} intra-op threads; "
        f"device {result['device']}; torch {environment['torch']}. Load average (1 min) at the start "
        f"{environment['load_start']:.1f}, at the end {environment['load_end']:.1f}.",
        "",
        f"**Hardware limit** (measured here): an n x n matmul (MKL on the CPU) runs at float32 "
        f"{peaks['matmul fp32']:,.0f} / bfloat16 {peaks['matmul bf16']:,.0f} GFLOP/s "
        f"({peaks['matmul bf16'] / peaks['matmul fp32']:.1f}x), a 3x3 convolution (oneDNN) at float32 "
        f"{peaks['conv fp32']:,.0f} / bfloat16 {peaks['conv bf16']:,.0f} GFLOP/s "
        f"({peaks['conv bf16'] / peaks['conv fp32']:.1f}x). The peak of a format is the faster of the two.",
        "",
        f"- Train: samples/s of a full step (forward, Focal Tversky loss, backward, AdamW over the used parameters) "
        f"at the script's batch size (32; 16 for the KOMPSAT-5 family); infer: images/s without autograd at batch 1 "
        f"and {batch}. Medians after warm-up. Each model runs in a fresh process; every configuration starts "
        f"from the same initial weights.",
        "- fp32: float32 eager, the published behaviour (`PRECISION=fp32 CHANNELS_LAST=0 COMPILE=0`). best: the "
        "fastest of bf16 autocast + channels_last (the engine's `auto` here), the same plus torch.compile "
        f"(`COMPILE=1`; tried on models whose float32 training step takes under {o['compile_below_s']:.0f} s) "
        "and, for inference of models with Linear layers, int8 dynamic quantization; the letters "
        "say which: **b** bf16 + channels_last, **c** + compile, **q** int8 dynamic, **f** none beat fp32 eager.",
        f"- GFLOPs and activations: one forward pass on one {size} x {size} patch (FlopCounterMode: a multiply-add is "
        f"2 FLOPs; activations: float32 bytes of every layer's output). % peak: achieved FLOP/s (training counted as "
        f"3x the forward FLOPs) over the peak of the configuration's number format.",
        "",
        "| model | params held | params used | GFLOPs | activations (MiB) | train fp32 | train best | x | % peak | "
        f"infer b1 fp32 | infer b1 best | x | infer b{batch} fp32 | infer b{batch} best | x | % peak |",
        "|---|" + "---:|" * 15,
    ]
    letters = {"fp32 eager": "f", "bf16 + channels_last": "b", "bf16 + channels_last + compile": "c", "int8 dynamic (Linear)": "q"}
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error'][:160]} |" + " |" * 14)
            continue
        cells = [row["label"], fmt(row["held"]), fmt(row["used"]), fmt(row["gflops"], 3 if row["gflops"] < 1 else 2),
                 fmt(row["activation_mib"], 1)]
        for key, flops_factor in (("train", 3), ("infer_b1", 1), ("infer_batch", 1)):
            base = row[key]["fp32 eager"]
            config, best = best_of(row[key])
            cells += [fmt(base, 1), f"{fmt(best, 1)} {letters[config]}", f"{best / base:.1f}x"]
            if key != "infer_b1":
                cells.append(f"{100 * flops_factor * row['gflops'] * best / peak_for(config):.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    shared = [row for row in rows if row.get("accelerated_share")]
    if shared:
        lines += ["", "**Where the time goes**: share of the step's operator time (torch.profiler) spent in matrix "
                      "products and convolutions, the operators bf16 speeds up by the ratios above. The rest "
                      "(normalization, activations, the float32 loss at full resolution, upsampling, the AdamW "
                      "update, per-operator overhead) moves memory and gains far less; where it dominates, "
                      "no number format can double the step.", "",
                  f"| model | train fp32 | train bf16 | infer b{batch} fp32 | infer b{batch} bf16 |", "|---|---:|---:|---:|---:|"]
        for row in shared:
            share = row["accelerated_share"]
            lines.append(f"| {row['label']} | " + " | ".join(
                f"{100 * share[f'{kind} {config}']:.0f}%" for kind in ("train", "infer")
                for config in ("fp32 eager", "bf16 + channels_last")) + " |")
    if pipeline:
        lines += ["", f"**Data pipeline**: loading + augmenting alone (preloaded demo split, the engine's albumentations "
                      f"pipeline, batch 32, main process as `NUM_WORKERS` auto sets it on 2 cores): "
                      f"{pipeline['data_rate']:,.0f} samples/s, against {pipeline['student_rate']:,.0f} samples/s for the "
                      f"fastest student's optimized training step: {fmt(pipeline['ratio'], 1)}x."]
    return "\n".join(lines) + "\n"


def kd_cost(overrides: list[str]) -> dict:
    """`--kd`: one distillation epoch against a student epoch plus a teacher forward epoch (lib.speed.kd_epoch_cost)."""
    import kd
    from lib import speed
    from lib.config import load_constants
    result = speed.kd_epoch_cost(load_constants(vars(kd), overrides))
    print(f"one epoch of {result['samples']} samples, batch {result['batch_size']}, {result['precision']}"
          f"{' + channels_last' if result['channels_last'] else ''}, medians of 3 alternated rounds:")
    for name in ("student alone", "teacher forward", "distillation"):
        print(f"  {name:16s} {result[name]:7.2f} s")
    print(f"  distillation / (student alone + teacher forward) = {result['ratio']:.2f}")
    return result


# --------------------------------------------------------------------------------------------- runner

def measure_each(kind: str, labels: list[str], configs: dict, o: dict, measure, status) -> list[dict]:
    """One row per model label: `measure(label, name, args, o)` in this process, or in a fresh one (`kind`
    of --worker); prints `status(row)` (or the error) and the seconds it took."""
    rows = []
    for label in labels:
        name, arguments = configs[label]
        started = time.perf_counter()
        payload = {"label": label, "name": name, "args": arguments, "options": o}
        row = measure(label, name, arguments, o) if o["in_process"] else run_isolated(kind, payload)
        rows.append(row)
        text = f"failed: {row['error']}" if "error" in row else status(row)
        print(f"  {label}: {text} ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def run_isolated(kind: str, payload: dict) -> dict:
    """Run one measurement in a fresh Python process (`benchmark.py --worker`); returns its result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({"kind": kind, **payload})]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return {"label": payload["label"], "model": payload["name"], "error": " | ".join(tail) or f"exit {result.returncode}"}
    return json.loads(lines[-1])


def setup_process(o: dict) -> None:
    torch.set_num_threads(o["threads"])
    if o["malloc"] == "tuned":
        from lib.runtime import keep_freed_memory
        keep_freed_memory()


def worker(spec: str) -> None:
    payload = json.loads(spec)
    setup_process(payload["options"])
    if payload["kind"] == "model":
        result = measure_model(payload["label"], payload["name"], payload["args"], payload["options"])
    elif payload["kind"] == "speed":
        result = measure_speed(payload["label"], payload["name"], payload["args"], payload["options"])
    else:
        result = measure_scene(payload["label"], payload["name"], payload["args"], Path(payload["scene"]),
                               payload["options"])
    print(json.dumps(result))


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}"


def render(rows: list[dict], scenes: list[dict], o: dict, environment: dict) -> str:
    size, batch = o["image_size"], o["batch_size"]
    cuda = any("cuda_latency_ms" in row for row in rows)
    lines = [
        "# Benchmark",
        "",
        f"Written by `python benchmark.py{' ' + o['command'] if o['command'] else ''}` on {environment['date']}. "
        f"Machine: {environment['cpu']}, {environment['cores']} cores; torch {environment['torch']}, "
        f"**{environment['threads']} intra-op thread{'s' if environment['threads'] != 1 else ''}** "
        f"(torch.get_num_threads()); "
        f"CUDA: {environment['cuda'] or 'not available'}. Load average (1 min) at the start "
        f"{environment['load_start']:.1f}, at the end {environment['load_end']:.1f}: other processes on the machine "
        f"slow the numbers down (multi-threaded timings suffer most when the cores are shared; the minimum "
        f"latency and maximum throughput next to the medians show what an unshared machine gets).",
        "",
        "- Parameters: held by the model / used in the forward pass (smp's PSPNet holds all MobileNetV2 stages, "
        "runs three).",
        f"- GFLOPs: one forward pass on one {size} x {size} patch, counted by `torch.utils.flop_counter.FlopCounterMode`, "
        f"which counts a multiply-add as 2 FLOPs and counts only matmul/convolution-type ops (not normalization, "
        f"activations, pooling or resampling).",
        f"- Latency: median of up to {o['repeats']} runs at batch 1 after {o['warmup']} warm-up runs; throughput: "
        f"images/s at batch {batch}, median of up to {o['repeats_full']} runs after one warm-up run; a phase stops "
        f"after {o['max_seconds']:.0f} s once it has 3 runs. A model whose batch of {batch} would take over "
        f"{o['max_seconds'] / 3:.0f} s gets no batch-{batch} warm-up (batch 1 warmed its kernels) and may stop after "
        f"one run; the column `runs` gives the timed runs at batch 1 / batch {batch}. fp32, `torch.inference_mode()`.",
        f"- Peak memory: the rise of the process's peak resident set (Linux VmHWM, reset via /proc/self/clear_refs "
        f"before each phase, after `malloc_trim`) above the resident size with the model loaded: activations and "
        f"workspace of the forward passes, not the weights or the Python/torch runtime (~0.6-0.9 GiB here). "
        f"{'One fresh process per model.' if not o['in_process'] else 'All models in one process (--in-process).'}",
        f"- Allocator: {MALLOC_NOTES[o['malloc']]}"
        + (" CUDA peak: `torch.cuda.max_memory_allocated` above the weights." if cuda else ""),
        "",
    ]
    header = ["model", "arguments", "params held", "params used", f"GFLOPs / {size}² patch",
              "CPU latency b1, ms: median (min)", f"CPU throughput b{batch}, img/s: median (max)", "runs",
              "CPU peak b1 (MiB)", f"CPU peak b{batch} (MiB)"]
    if cuda:
        header += ["CUDA latency b1 (ms)", f"CUDA throughput b{batch} (img/s)", f"CUDA peak b{batch} (MiB)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in rows:
        arguments = ", ".join(f"{k}={v}" for k, v in row["args"].items()) or "defaults"
        if "error" in row:
            lines.append(f"| {row['label']} | {arguments} | failed: {row['error'][:120]} |" + " |" * (len(header) - 3))
            continue
        cells = [row["label"], arguments, fmt(row["held"]), fmt(row["used"]), fmt(row["gflops"], 3 if row["gflops"] < 1 else 2),
                 f"{fmt(row['cpu_latency_ms'], 1)} ({fmt(row['cpu_latency_min_ms'], 1)})",
                 f"{fmt(row['cpu_throughput'], 1)} ({fmt(row['cpu_throughput_max'], 1)})",
                 f"{row['cpu_latency_runs']}/{row['cpu_throughput_runs']}", fmt(row["cpu_peak_b1_mib"], 0),
                 fmt(row["cpu_peak_mib"], 0)]
        if cuda:
            cells += [fmt(row.get("cuda_latency_ms"), 2), fmt(row.get("cuda_throughput"), 0), fmt(row.get("cuda_peak_mib"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if scenes:
        side = o["scene_size"]
        lines += ["", f"## Whole scene: {side:,} x {side:,} px ({side * side / 1e6:,.{0 if side >= 1000 else 2}f} Mpx)", "",
                  f"`lib.inference.predict_file` (the predict.py engine) on a synthetic float32 GeoTIFF, tiles of "
                  f"{size} px with {size // 4} px overlap, batches of {o['scene_batch']} tiles, mask GeoTIFF and "
                  f"quick-look written; {'all in this process (--in-process)' if o['in_process'] else 'one fresh process per model'}. "
                  f"Peak memory: the whole process's peak resident set (including ~0.6-0.9 GiB of Python/torch "
                  f"runtime), and its rise during the prediction.", "",
                  "| model | device | tiles | seconds | Mpx/s | peak RSS, process (MiB) | peak rise during predict (MiB) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for scene in scenes:
            if "error" in scene:
                lines.append(f"| {scene['label']} | failed: {scene['error'][:160]} | | | | | |")
                continue
            lines.append(f"| {scene['label']} | {scene['device']} | {fmt(scene['tiles'])} | {fmt(scene['seconds'], 1)} | "
                         f"{fmt(scene['megapixels_per_s'], 2)} | {fmt(scene['peak_process_mib'], 0)} | "
                         f"{fmt(scene['peak_rise_mib'], 0)} |")
    return "\n".join(lines) + "\n"


def environment_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": cores, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_start": os.getloadavg()[0]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--models", nargs="+", help=f"labels to benchmark (default all: {', '.join(configurations())})")
    parser.add_argument("--scene-models", nargs="*", help=f"models for the whole scene (default {' '.join(SCENE_MODELS)}; "
                                                          f"none: skip the scene)")
    parser.add_argument("--scene-size", type=int, help=f"side of the synthetic scene (default {SCENE_SIZE}; 0 skips it)")
    parser.add_argument("--image-size", type=int, help=f"patch / tile side (default {IMAGE_SIZE})")
    parser.add_argument("--batch-size", type=int, help=f"throughput batch (default {BATCH_SIZE})")
    parser.add_argument("--warmup", type=int, help=f"warm-up runs (default {WARMUP})")
    parser.add_argument("--repeats", type=int, help=f"timed runs at batch 1 (default {REPEATS})")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="time limit of a timing phase")
    parser.add_argument("--threads", type=int, help=f"torch intra-op threads (default {torch.get_num_threads()}; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny configuration for tests: 64 px, batch 4, 1 warm-up, 2 repeats, 320 px scene, 1 thread, "
                             "in-process")
    parser.add_argument("--in-process", action="store_true", help="measure every model in this process")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="tuned (default): glibc keeps freed memory for reuse, as predict.py sets it "
                             "(lib.runtime.keep_freed_memory); default: glibc's own settings")
    parser.add_argument("--train", action="store_true",
                        help=f"speed mode: fp32 eager vs the fastest configuration, training and inference "
                             f"(default output {SPEED_OUTPUT})")
    parser.add_argument("--kd", nargs="*", metavar="NAME=value",
                        help="distillation cost: seconds of a student epoch, a teacher forward epoch and a KD epoch "
                             "with kd.py's constants (overridden by NAME=value), and their ratio")
    parser.add_argument("--no-compile", action="store_true", help="--train: leave torch.compile out (it compiles "
                                                                  "each model for tens of seconds)")
    parser.add_argument("--output", type=Path, help=f"markdown file (default {OUTPUT}; {SPEED_OUTPUT} with --train)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_report(table: str, output: Path, json_path: Path | None, raw: dict) -> None:
    """Print the markdown table, write it to `output`, and the raw numbers to `json_path` when given."""
    print("\n" + table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    if json_path:
        json_path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"wrote {output}")


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return {}
    if args.kd is not None:
        return kd_cost(args.kd)
    quick = args.quick
    pick = lambda value, full, small: value if value is not None else (small if quick else full)  # noqa: E731
    o = {"image_size": pick(args.image_size, IMAGE_SIZE, 64), "batch_size": pick(args.batch_size, BATCH_SIZE, 4),
         "warmup": pick(args.warmup, WARMUP, 1), "repeats": pick(args.repeats, REPEATS, 2),
         "repeats_full": max(1 if quick else 3, pick(args.repeats, REPEATS, 2) // 2),
         "max_seconds": args.max_seconds, "cuda": not args.no_cuda,
         "threads": pick(args.threads, torch.get_num_threads(), 1),
         "scene_size": pick(args.scene_size, SCENE_SIZE, 320), "scene_batch": SCENE_BATCH,
         "in_process": args.in_process or quick, "malloc": args.malloc,
         "command": " ".join(a for a in argv if not a.startswith("--worker")),
         "quick": quick, "compile": not args.no_compile, "compile_below_s": COMPILE_BELOW_S}
    output = args.output or Path(SPEED_OUTPUT if args.train else OUTPUT)
    if o["in_process"]:
        setup_process(o)
    else:
        torch.set_num_threads(o["threads"])
    if not peak_reset_supported():
        raise SystemExit("error: /proc/self/clear_refs is not writable here, so peak memory cannot be measured")
    configs = configurations()
    labels = args.models or list(configs)
    scene_labels = list(SCENE_MODELS) if args.scene_models is None else args.scene_models
    unknown = [label for label in [*labels, *scene_labels] if label not in configs]
    if unknown:
        raise SystemExit(f"error: unknown model label(s) {', '.join(unknown)}; known: {', '.join(configs)}")
    environment = environment_info()
    if args.train:
        result = run_speed(labels, configs, o, environment)
        table = render_speed(result, o, environment)
        write_report(table, output, args.json, {"environment": environment, "options": o, **result})
        return {**result, "markdown": table}
    print(f"benchmark: {len(labels)} model(s), {o['image_size']} px, batch {o['batch_size']}, "
          f"{torch.get_num_threads()} threads, {'in-process' if o['in_process'] else 'one process per model'}", flush=True)

    rows = measure_each("model", labels, configs, o, measure_model,
                        lambda row: f"{row['gflops']:.2f} GFLOPs, {row['cpu_latency_ms']:.1f} ms, "
                                    f"{row['cpu_throughput']:.1f} img/s, peak {row['cpu_peak_mib']:.0f} MiB")

    scenes = []
    if o["scene_size"] > 0 and scene_labels:
        with tempfile.TemporaryDirectory(prefix="benchmark_scene_") as folder:
            scene = write_scene(Path(folder) / "scene.tif", o["scene_size"])
            print(f"scene {o['scene_size']} x {o['scene_size']} written to {scene}", flush=True)
            for label in scene_labels:
                name, model_arguments = configs[label]
                payload = {"label": label, "name": name, "args": model_arguments, "options": o, "scene": str(scene)}
                result = (measure_scene(label, name, model_arguments, scene, o) if o["in_process"]
                          else run_isolated("scene", payload))
                scenes.append(result)
                status = result.get("error") or (f"{result['seconds']:.1f} s, {result['megapixels_per_s']:.2f} Mpx/s, "
                                                 f"peak {result['peak_process_mib']:.0f} MiB process, "
                                                 f"+{result['peak_rise_mib']:.0f} MiB during predict")
                print(f"  scene {label}: {status}", flush=True)

    environment["load_end"] = os.getloadavg()[0]
    table = render(rows, scenes, o, environment)
    write_report(table, output, args.json, {"environment": environment, "options": o, "models": rows, "scenes": scenes})
    return {"models": rows, "scenes": scenes, "markdown": table}


if __name__ == "__main__":
    from lib.cli import run
    run(main)
