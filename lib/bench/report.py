"""The markdown pages benchmark.py writes: docs/benchmark.md (render) and docs/speed.md (render_speed), from
the rows lib.bench.measure returns, the options `o` and the machine description (environment_info)."""
from __future__ import annotations

import json
from pathlib import Path

from lib.bench.measure import best_of

MALLOC_NOTES = {
    "tuned": "glibc malloc told to keep freed memory for reuse (`lib.runtime.keep_freed_memory`, as predict.py "
             "and the training engine do on CPU). With glibc's defaults large activations are unmapped after every forward pass and "
             "page-faulted in again, which made batch-32 CPU throughput 2-4x lower here (`--malloc default`).",
    "default": "glibc malloc with its default settings (`--malloc default`): large activations are unmapped after "
               "every forward pass and page-faulted in again, which costs big batches a lot on CPU; predict.py "
               "uses `--malloc tuned` behaviour.",
}


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}"


def render(rows: list[dict], scenes: list[dict], o: dict, environment: dict) -> str:
    """docs/benchmark.md: how it was measured, a row per model, and the whole-scene rows if any."""
    cuda = any("cuda_latency_ms" in row for row in rows)
    lines = benchmark_notes(o, environment, cuda) + model_table(rows, o, cuda)
    if scenes:
        lines += scene_table(scenes, o)
    return "\n".join(lines) + "\n"


def benchmark_notes(o: dict, environment: dict, cuda: bool) -> list[str]:
    size, batch = o["image_size"], o["batch_size"]
    return [
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


def model_table(rows: list[dict], o: dict, cuda: bool) -> list[str]:
    size, batch = o["image_size"], o["batch_size"]
    header = ["model", "arguments", "params held", "params used", f"GFLOPs / {size}² patch",
              "CPU latency b1, ms: median (min)", f"CPU throughput b{batch}, img/s: median (max)", "runs",
              "CPU peak b1 (MiB)", f"CPU peak b{batch} (MiB)"]
    if cuda:
        header += ["CUDA latency b1 (ms)", f"CUDA throughput b{batch} (img/s)", f"CUDA peak b{batch} (MiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
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
    return lines


def scene_table(scenes: list[dict], o: dict) -> list[str]:
    size, side = o["image_size"], o["scene_size"]
    lines = ["", f"## Whole scene: {side:,} x {side:,} px ({side * side / 1e6:,.{0 if side >= 1000 else 2}f} Mpx)", "",
             f"`lib.mapping.scene.map_scene` (what predict.py runs) on a synthetic float32 GeoTIFF, tiles of "
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
    return lines


def render_speed(result: dict, o: dict, environment: dict) -> str:
    """docs/speed.md: the machine's peaks, a row per model, where the time goes, and the data pipeline."""
    rows, batch = result["rows"], o["batch_size"]
    lines = speed_notes(result, o, environment) + speed_table(rows, result["peaks"], batch)
    if any(row.get("accelerated_share") for row in rows):
        lines += time_share_table(rows, batch)
    if result["pipeline"]:
        lines += pipeline_note(result["pipeline"])
    return "\n".join(lines) + "\n"


def speed_notes(result: dict, o: dict, environment: dict) -> list[str]:
    peaks, size, batch = result["peaks"], o["image_size"], o["batch_size"]
    return [
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


def speed_table(rows: list[dict], peaks: dict, batch: int) -> list[str]:
    peak_for = lambda config: peaks["fp32" if config.startswith("fp32") or config.startswith("int8") else "bf16"]  # noqa: E731
    lines = []
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
    return lines


def time_share_table(rows: list[dict], batch: int) -> list[str]:
    lines = ["", "**Where the time goes**: share of the step's operator time (torch.profiler) spent in matrix "
                 "products and convolutions, the operators bf16 speeds up by the ratios above. The rest "
                 "(normalization, activations, the float32 loss at full resolution, upsampling, the AdamW "
                 "update, per-operator overhead) moves memory and gains far less; where it dominates, "
                 "no number format can double the step.", "",
             f"| model | train fp32 | train bf16 | infer b{batch} fp32 | infer b{batch} bf16 |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        share = row.get("accelerated_share")
        if share:
            lines.append(f"| {row['label']} | " + " | ".join(
                f"{100 * share[f'{kind} {config}']:.0f}%" for kind in ("train", "infer")
                for config in ("fp32 eager", "bf16 + channels_last")) + " |")
    return lines


def pipeline_note(pipeline: dict) -> list[str]:
    return ["", f"**Data pipeline**: loading + augmenting alone (preloaded demo split, the engine's albumentations "
                f"pipeline, batch 32, main process as `NUM_WORKERS` auto sets it on 2 cores): "
                f"{pipeline['data_rate']:,.0f} samples/s, against {pipeline['student_rate']:,.0f} samples/s for the "
                f"fastest student's optimized training step: {fmt(pipeline['ratio'], 1)}x."]


def write_report(table: str, output: Path, json_path: Path | None, raw: dict) -> None:
    """Print the markdown table, write it to `output`, and the raw numbers to `json_path` when given."""
    from lib.checkpoint import atomic_write  # a failed write keeps the previous page, naming the file
    print("\n" + table)
    atomic_write(output, lambda handle: handle.write(table.encode()))
    if json_path:
        atomic_write(json_path, lambda handle: handle.write(json.dumps(raw, indent=2, default=str).encode()))
    print(f"wrote {output}")

