"""What benchmark.py measures, and how: peak memory from /proc (VmHWM, reset through clear_refs), latency,
throughput and FLOPs of one model, whole-scene prediction, the speed table (lib/bench/speed.py), and the worker
protocol that runs each model in a fresh process (`python -m lib.bench.measure SPEC`) so one model's freed
heap cannot hide the next one's. Every measurement takes `o`, the options benchmark.py resolves."""
from __future__ import annotations

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

import torch

from lib.bench.cost import count_flops
from lib.models.factory import build_model, parameter_counts
from lib.bench.speed import timed_runs

REPO = Path(__file__).resolve().parents[2]  # workers run from the repository root, as benchmark.py does


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

def measure_scenes(labels: list[str], configs: dict, o: dict) -> list[dict]:
    """One row per label: map_scene (predict.py's) on a synthetic SCENE_SIZE scene written once to a temporary
    folder."""
    from lib.synthetic.scene import write_scene
    with tempfile.TemporaryDirectory(prefix="benchmark_scene_") as folder:
        scene = write_scene(Path(folder) / "scene.tif", o["scene_size"])
        print(f"scene {o['scene_size']} x {o['scene_size']} written to {scene}", flush=True)
        return measure_each("scene", labels, configs, o, measure_scene, scene_status, prefix="scene ",
                            extra={"scene": str(scene)})


def measure_scene(label: str, name: str, args: dict, o: dict, scene: str) -> dict:
    from lib.data.bands import SAR_DB_RANGE
    from lib.mapping.scene import SceneOptions, SceneOutputs, map_scene
    torch.manual_seed(0)
    size = o["image_size"]
    model = build_model(name, model_args(name, args, size)).eval()
    data = {"val_bands": ["VV"], "normalization": {"VV": list(SAR_DB_RANGE)}, "image_size": size}
    device = "cuda" if o.get("scene_cuda") and torch.cuda.is_available() else "cpu"
    model.to(device)
    with tempfile.TemporaryDirectory() as folder:
        base = reset_peak()
        options = SceneOptions(tile=size, overlap=size // 4, batch_size=o["scene_batch"], device=device,
                               progress=False)
        outputs = SceneOutputs(mask=Path(folder) / "mask.tif", quicklook=Path(folder) / "mask.png")
        summary = map_scene(model, data, [Path(scene)], outputs, options)
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
    """One row of the speed table: every configuration of lib.bench.speed.CONFIGS, training and inference."""
    from lib.bench import speed
    device = torch.device("cuda" if o["cuda"] and torch.cuda.is_available() else "cpu")
    size, batch = o["image_size"], o["batch_size"]
    train_batch = o.get("train_batch") or o["script_batch"].get(name, 32)
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
    from lib.bench import speed
    from lib.data.augmentation import train_augmentation
    from lib.data.dataset import BandPatchDataset
    from lib.synthetic.demo import make_demo_dataset
    with tempfile.TemporaryDirectory(prefix="benchmark_data_") as folder:
        make_demo_dataset(Path(folder), n_train=64, n_val=4, seed=0, size=o["image_size"])
        dataset = BandPatchDataset(folder, "train", ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI"), train=True,
                                   transform=train_augmentation(0), image_size=o["image_size"], preload="auto")
        rate = speed.data_pipeline_rate(dataset, 32, workers=0, samples=64 if o["quick"] else 4096)
    return {"data_rate": rate, "student_rate": student_rate, "ratio": rate / student_rate if student_rate else None}


def run_speed(labels: list[str], configs: dict, o: dict, environment: dict) -> dict:
    from lib.bench import speed
    device = torch.device("cuda" if o["cuda"] and torch.cuda.is_available() else "cpu")
    n, side, seconds = (256, 16, 0.2) if o["quick"] else (2048, 64, 2.0)
    peaks = {f"{kind} {name}": measure(dtype, device, seconds=seconds, **size)
             for kind, measure, size in (("matmul", speed.matmul_peak_gflops, {"n": n}),
                                         ("conv", speed.conv_peak_gflops, {"side": side}))
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name in ("fp32", "bf16"):  # the ceiling of a number format: the faster of its two kernel families
        peaks[name] = max(peaks[f"matmul {name}"], peaks[f"conv {name}"])
    print("peaks on " + str(device) + ": " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + " GFLOP/s", flush=True)
    rows = measure_each("speed", labels, configs, o, measure_speed, speed_status)
    students = [r for r in rows if "error" not in r and r["model"] in ("PSPMixer", "UnetLight")]
    fastest = max((best_of(r["train"])[1] for r in students), default=0.0)
    pipeline = data_pipeline(o, fastest)
    environment["load_end"] = os.getloadavg()[0]
    return {"peaks": peaks, "device": str(device), "rows": rows, "pipeline": pipeline}


# ------------------------------------------------------------------------------------------ progress

def model_status(row: dict) -> str:
    return (f"{row['gflops']:.2f} GFLOPs, {row['cpu_latency_ms']:.1f} ms, {row['cpu_throughput']:.1f} img/s, "
            f"peak {row['cpu_peak_mib']:.0f} MiB")


def scene_status(row: dict) -> str:
    return (f"{row['seconds']:.1f} s, {row['megapixels_per_s']:.2f} Mpx/s, peak {row['peak_process_mib']:.0f} MiB "
            f"process, +{row['peak_rise_mib']:.0f} MiB during predict")


def speed_status(row: dict) -> str:
    config, rate = best_of(row["train"])
    return f"train {row['train']['fp32 eager']:.1f} -> {rate:.1f} samples/s ({config})"


# --------------------------------------------------------------------------------------------- runner

MEASURES = {"model": measure_model, "scene": measure_scene, "speed": measure_speed}  # the `kind` of a worker


def measure_each(kind: str, labels: list[str], configs: dict, o: dict, measure, status, prefix: str = "",
                 extra: dict | None = None) -> list[dict]:
    """One row per model label: `measure(label, name, args, o, **extra)` in this process, or in a fresh one
    (`kind` of MEASURES); prints `status(row)` (or the error) and the seconds it took."""
    rows, extra = [], extra or {}
    for label in labels:
        name, arguments = configs[label]
        started = time.perf_counter()
        payload = {"label": label, "name": name, "args": arguments, "options": o, **extra}
        row = measure(label, name, arguments, o, **extra) if o["in_process"] else run_isolated(kind, payload)
        rows.append(row)
        text = f"failed: {row['error']}" if "error" in row else status(row)
        print(f"  {prefix}{label}: {text} ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def run_isolated(kind: str, payload: dict) -> dict:
    """Run one measurement in a fresh Python process (`python -m lib.bench.measure`); returns its result."""
    command = [sys.executable, "-m", "lib.bench.measure", json.dumps({"kind": kind, **payload})]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
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
    """The worker side of run_isolated: measure one model as the JSON `spec` says, print the row as JSON."""
    payload = json.loads(spec)
    setup_process(payload["options"])
    extra = {"scene": payload["scene"]} if payload["kind"] == "scene" else {}
    measure = MEASURES[payload["kind"]]
    print(json.dumps(measure(payload["label"], payload["name"], payload["args"], payload["options"], **extra)))


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


if __name__ == "__main__":
    worker(sys.argv[1])
