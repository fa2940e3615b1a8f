"""Benchmark every architecture of lib.models.factory.MODELS, and whole-scene inference with the predict.py engine.

    python benchmark.py                                   # full run, writes runs/benchmark/benchmark.md (minutes on a CPU)
    python benchmark.py --docs                            # the same, regenerating the repository's docs/benchmark.md
    python benchmark.py --models UnetLight PSPMixer-kd --scene-size 4000
    python benchmark.py --quick --output /tmp/bench.md     # tiny configuration, a few seconds per model
    python benchmark.py --train --docs                     # speed: fp32 eager vs optimized, regenerates docs/speed.md
    python benchmark.py --throughput --docs                # whole-scene mapping without bf16: its section of docs/benchmark.md

An existing output (the page or --json) is replaced only with --overwrite (--docs says so for the docs pages).

Per model (default configuration; PSPMixer three times: the train_pspmixer.py default, the kd.py student and
PSPMixer-shore, the recommended student):
parameters held and used in the forward pass (lib.models.factory.parameter_counts), FLOPs of one forward pass on one
IMAGE_SIZE x IMAGE_SIZE patch counted by torch.utils.flop_counter.FlopCounterMode (a multiply-add counts
as 2 FLOPs, as torch counts; only matmul/conv/attention-type ops are counted, not normalization,
activations or resampling), CPU latency at batch 1 (median ms) and throughput at batch BATCH_SIZE (median
images/s), after warm-up, with torch's intra-op thread count stated, and peak memory: the rise of the
process's peak resident set size (VmHWM, reset through /proc/self/clear_refs before each phase) above the
resident size with the model loaded, so it is what the forward passes need (activations, workspace).
Each model runs in a fresh subprocess (unless --in-process), so one model's freed heap cannot hide the
next one's. The same on CUDA when it is available (torch.cuda.max_memory_allocated above the weights).

Whole scene: megapixels per second of lib.mapping.scene.map_scene (what predict.py runs: GeoTIFF read by
windows, tiles of IMAGE_SIZE with IMAGE_SIZE/4 overlap, blending, mask GeoTIFF written by windows,
quick-look PNG) on a synthetic SCENE_SIZE x SCENE_SIZE float32 GeoTIFF in a temporary folder, for the
teacher and the students, with the peak resident memory of that process (whole process, and the rise
during the prediction). Models are randomly initialized: speed does not depend on the weights.

--throughput (lib/bench/throughput.py): whole-scene mapping with predict.py on 2 cores without bf16
(--precision fp32) on a THROUGHPUT_SIZE synthetic pre-/post-event pair, for the teacher and each student, as a
checkpoint and as float and int8 ONNX, plain and with --pre --polygons: Mpx/s end to end and of the pass, CPU
seconds per Mpx and where the time goes (reading, normalizing, inference, blending, the sinks, the pre-event
pass, COGs, polygons). It replaces (or adds) the page's section "Whole-scene mapping without bf16" and keeps
the rest of the page; the full run keeps that section of the page it rewrites.

--train (lib/bench/speed.py): for every model, parameters held and used, FLOPs and activation bytes per patch,
training samples/s at its script's batch size and inference images/s at batch 1 and BATCH_SIZE, each in
float32 eager and in the fastest configuration found (lib.bench.speed.CONFIGS: bf16 autocast, channels_last,
torch.compile; int8 dynamic quantization for inference where a model has Linear layers), with the ratio,
beside the measured matmul and convolution peaks of the machine in float32 and bfloat16 and each model's
fraction of them, and the share of each step spent in matrix products and convolutions (torch.profiler);
then the data pipeline (loading + augmentation alone) against the fastest student's training step.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from lib.bench.cost import count_flops  # noqa: F401 - benchmark.count_flops, as before the split
from lib.bench.measure import (environment_info, measure_each, measure_model, measure_scenes, model_status,
                               peak_reset_supported, run_speed, setup_process)
from lib.bench.report import render, render_speed, write_report
from lib.bench.throughput import (STUDENTS, TEACHER, THROUGHPUT_SIZE, measure_throughput, render_throughput,
                                  section_of, with_section)
from lib.checkpoint import same_file
from lib.errors import ConfigError, OutputError
from lib.models.factory import MODELS

IMAGE_SIZE = 256
BATCH_SIZE = 32              # throughput batch
WARMUP = 3                   # untimed runs before timing (batch 1; 1 run at BATCH_SIZE)
REPEATS = 10                 # timed runs at batch 1; at BATCH_SIZE, REPEATS // 2 (at least 3, 1 with --quick)
MAX_SECONDS = 60.0           # stop timing a phase after this long once 3 runs are in
SCENE_SIZE = 10_000          # side of the synthetic whole scene
SCENE_MODELS = ("PSPNet", "UnetLight", "PSPMixer", "PSPMixer-kd")
SCENE_BATCH = 8              # tiles per forward pass in the scene run (predict.py's default on CPU)
OUTPUT = "runs/benchmark/benchmark.md"
SPEED_OUTPUT = "runs/benchmark/speed.md"
DOCS_OUTPUT = "docs/benchmark.md"        # the repository's generated pages: written only with --docs
DOCS_SPEED_OUTPUT = "docs/speed.md"
COMPILE_BELOW_S = 5.0       # --train tries torch.compile on models whose float32 training step takes less
SCRIPT_BATCH = {"FCN_VGG16": 16, "FCN_VGG19": 16, "UNet_Classic": 16, "DeepUNet": 16, "HRNet": 16}  # others: 32

# PSPMixer configurations: the train_pspmixer.py default, the kd.py student, and the recommended student
# with the full-resolution refinement, int8-friendly (docs/distillation-methods.md#a-student-that-can-draw-a-shore)
PSPMIXER_CONFIGS = {"PSPMixer": {"patch": 16, "hidden": 48, "depth": 3},
                    "PSPMixer-kd": {"patch": 32, "hidden": 128, "depth": 3, "tokens_mlp": 64, "channels_mlp": 256},
                    "PSPMixer-shore": {"patch": 32, "hidden": 128, "depth": 3, "tokens_mlp": 64, "channels_mlp": 256,
                                       "refine": 8, "activation": "relu", "norm": "batch"}}


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


def kd_cost(overrides: list[str]) -> dict:
    """`--kd`: one distillation epoch against a student epoch plus a teacher forward epoch
    (lib_kd.speed_kd.kd_epoch_cost), with kd.py's constants (lib_kd.constants) and `overrides`."""
    from lib.config import load_constants
    from lib_kd.constants import kd_constants
    from lib_kd.speed_kd import kd_epoch_cost
    result = kd_epoch_cost(load_constants(kd_constants(), overrides))
    print(f"one epoch of {result['samples']} samples, batch {result['batch_size']}, {result['precision']}"
          f"{' + channels_last' if result['channels_last'] else ''}, distillation {result['methods']}, "
          f"medians of 3 alternated rounds:")
    for name in ("student alone", "teacher forward", "distillation"):
        print(f"  {name:16s} {result[name]:7.2f} s")
    print(f"  distillation / (student alone + teacher forward) = {result['ratio']:.2f}")
    return result


# --------------------------------------------------------------------------------------- command line

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
    parser.add_argument("--throughput", action="store_true",
                        help="whole-scene mapping without bf16 (teacher, students, float and int8 ONNX, plain and "
                             "--pre --polygons): its section of the page, the rest kept")
    parser.add_argument("--throughput-size", type=int,
                        help=f"side of the --throughput scene pair (default {THROUGHPUT_SIZE}; 256 with --quick)")
    parser.add_argument("--kd", nargs="*", metavar="NAME=value",
                        help="distillation cost: seconds of a student epoch, a teacher forward epoch and a KD epoch "
                             "with kd.py's constants (overridden by NAME=value), and their ratio")
    parser.add_argument("--no-compile", action="store_true", help="--train: leave torch.compile out (it compiles "
                                                                  "each model for tens of seconds)")
    parser.add_argument("--output", type=Path, help=f"markdown file (default {OUTPUT}; {SPEED_OUTPUT} with --train)")
    parser.add_argument("--docs", action="store_true", help=f"write the repository's own page instead: {DOCS_OUTPUT} "
                                                            f"({DOCS_SPEED_OUTPUT} with --train)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output or --json file")
    parser.add_argument("--json", type=Path, help="also write the raw numbers as JSON")
    return parser.parse_args(argv)


# options that are counts: the smallest value each allows
AT_LEAST = {"image_size": 8, "batch_size": 1, "warmup": 0, "repeats": 1, "threads": 1, "scene_size": 0,
            "throughput_size": 64}


def check_args(args: argparse.Namespace) -> None:
    """Refuse a count out of range before any work (--image-size 0 used to fail deep in a model)."""
    for name, low in AT_LEAST.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected an integer >= {low}")
    if not args.max_seconds > 0:
        raise ConfigError(f"--max-seconds {args.max_seconds:g}: expected a number > 0")


def outputs(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(the markdown page, the JSON file): never the docs pages unless --docs, never an existing file unless
    --overwrite (or --docs for the page it names), never one file twice; checked before measuring."""
    if args.docs and args.output:
        raise ConfigError("--docs and --output name two pages; give one")
    page = Path(DOCS_SPEED_OUTPUT if args.train else DOCS_OUTPUT) if args.docs else \
        args.output or Path(SPEED_OUTPUT if args.train else OUTPUT)
    if args.json and same_file(args.json, page):
        raise ConfigError(f"--json {args.json} is the markdown page too; give each its own path")
    for path, replaceable in ((page, args.overwrite or args.docs), (args.json, args.overwrite)):
        if path is None:
            continue
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give a file path")
        if path.exists() and not replaceable:
            raise OutputError(f"{path}: exists; pass --overwrite to replace it, or give another path "
                              f"(--output / --json)")
    return page, args.json


def options(args: argparse.Namespace, argv: list[str]) -> dict:
    """The measuring options `o` every measurement and page takes; --quick shrinks what is not given."""
    quick = args.quick
    pick = lambda value, full, small: value if value is not None else (small if quick else full)  # noqa: E731
    return {"image_size": pick(args.image_size, IMAGE_SIZE, 64), "batch_size": pick(args.batch_size, BATCH_SIZE, 4),
            "warmup": pick(args.warmup, WARMUP, 1), "repeats": pick(args.repeats, REPEATS, 2),
            "repeats_full": max(1 if quick else 3, pick(args.repeats, REPEATS, 2) // 2),
            "max_seconds": args.max_seconds, "cuda": not args.no_cuda,
            "threads": pick(args.threads, torch.get_num_threads(), 1),
            "scene_size": pick(args.scene_size, SCENE_SIZE, 320), "scene_batch": SCENE_BATCH,
            "throughput_size": pick(args.throughput_size, THROUGHPUT_SIZE, 256),
            "in_process": args.in_process or quick, "malloc": args.malloc,
            "command": " ".join(argv),
            "quick": quick, "compile": not args.no_compile, "compile_below_s": COMPILE_BELOW_S,
            "script_batch": SCRIPT_BATCH}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.kd is not None:
        return kd_cost(args.kd)
    check_args(args)
    o = options(args, argv)
    output, json_path = outputs(args)
    if o["in_process"]:
        setup_process(o)
    else:
        torch.set_num_threads(o["threads"])
    if not peak_reset_supported():
        raise ConfigError("/proc/self/clear_refs is not writable here, so peak memory cannot be measured")
    configs = configurations()
    labels = args.models or list(configs)
    scene_labels = list(SCENE_MODELS) if args.scene_models is None else args.scene_models
    unknown = [label for label in [*labels, *scene_labels] if label not in configs]
    if unknown:
        raise ConfigError(f"unknown model label(s) {', '.join(unknown)}; known: {', '.join(configs)}")
    environment = environment_info()
    if args.train:
        result = run_speed(labels, configs, o, environment)
        table = render_speed(result, o, environment)
        write_report(table, output, json_path, {"environment": environment, "options": o, **result})
        return {**result, "markdown": table}
    if args.throughput:
        return throughput_page(args.models or [TEACHER[1], *STUDENTS], configs, o, environment, output, json_path)
    print(f"benchmark: {len(labels)} model(s), {o['image_size']} px, batch {o['batch_size']}, "
          f"{torch.get_num_threads()} threads, {'in-process' if o['in_process'] else 'one process per model'}", flush=True)
    rows = measure_each("model", labels, configs, o, measure_model, model_status)
    scenes = measure_scenes(scene_labels, configs, o) if o["scene_size"] > 0 and scene_labels else []
    environment["load_end"] = os.getloadavg()[0]
    table = render(rows, scenes, o, environment)
    kept = section_of(output.read_text()) if output.is_file() else None  # --throughput's section stays
    table = with_section(table, kept) if kept else table
    write_report(table, output, json_path, {"environment": environment, "options": o, "models": rows, "scenes": scenes})
    return {"models": rows, "scenes": scenes, "markdown": table}


def throughput_page(labels: list[str], configs: dict, o: dict, environment: dict, output: Path,
                    json_path: Path | None) -> dict:
    """--throughput: measure (lib/bench/throughput.py) and put its section into the page, the rest kept."""
    print(f"throughput: {', '.join(labels)} on a {o['throughput_size']} px pair, fp32, {torch.get_num_threads()} "
          f"threads", flush=True)
    result = {**measure_throughput(labels, configs, o), "command": "python benchmark.py " + o["command"]}
    environment["load_end"] = result["load_end"]
    section = render_throughput(result, environment)
    page = with_section(output.read_text() if output.is_file() else None, section)
    write_report(page, output, json_path, {"environment": environment, "options": o, "throughput": result})
    return {"throughput": result, "markdown": section}


if __name__ == "__main__":
    from lib.cli import run
    run(main)
