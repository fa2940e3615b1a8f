"""Whole-scene mapping throughput without bf16 (benchmark.py --throughput; docs/benchmark.md's section
"Whole-scene mapping without bf16"): `python predict.py`, one fresh process per run, on a synthetic
pre-/post-event pair (lib.synthetic.flood_pair), with `--precision fp32`, for the teacher and each
student as a checkpoint and as float and int8 ONNX (export_onnx.py's export and quantization), and the
threshold method, plain and with `--pre --polygons`.

Per run: Mpx/s end to end (the whole predict.py process: start-up and imports, model load and hash,
checks, every pass, COGs, polygons), Mpx/s of the post-event pass (the summary's megapixels_per_s), the
process's CPU seconds per Mpx of the scene (steadier than wall clock on a shared machine), and the
summary's timings: the post-event pass's stages (read, normalize, inference, blend, sinks), the
pre-event pass, COGs and polygons. Models are randomly initialized (speed does not depend on the
weights; int8 is calibrated on tiles of the scene)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]   # where predict.py and export_onnx.py are
THROUGHPUT_SIZE = 2048           # side of the synthetic scene pair
TEACHER = ("PSPNet", "PSPNet")    # (label, configurations() label)
STUDENTS = ("UnetLight", "PSPMixer-shore", "MLP_256")
FAST = {"UnetLight": ["--tile", "512", "--overlap", "32", "--batch-size", "4"]}  # fully convolutional: big tiles
THRESHOLD_WITH = "UnetLight"      # the checkpoint the threshold method's row is run with
CALIBRATION_TILES = 16
RUNS = {"plain": [], "--pre --polygons": ["--pre", "{pre}", "--polygons", "{out}/flood.gpkg"]}
STAGES = ("read", "normalize", "inference", "blend", "sinks")


def model_files(labels: list[str], configs: dict, image_size: int, folder: Path, scene: Path,
                onnx: bool = True) -> list[tuple[str, Path, list[str]]]:
    """(row label, checkpoint or .onnx, extra predict.py arguments) of every model mapped: each label as a
    random-initialized checkpoint, and each student's float and int8 ONNX export."""
    from lib.bench.measure import model_args
    from lib.checkpoint import save_checkpoint
    files = []
    for label in labels:
        name, args = configs[label]
        torch.manual_seed(0)
        checkpoint = random_checkpoint(name, model_args(name, args, image_size), image_size)
        path = folder / f"{label}.pt"
        save_checkpoint(checkpoint, path)
        files.append((label, path, []))
        if label in FAST:
            files.append((f"{label}, {' '.join(FAST[label])}", path, FAST[label]))
        if label == THRESHOLD_WITH:  # the per-scene threshold maps without the model
            files.append(("threshold (--method threshold)", path, ["--method", "threshold"]))
        if onnx and label != TEACHER[1]:
            files += onnx_files(label, path, folder, scene, image_size)
    return files


def random_checkpoint(name: str, args: dict, image_size: int) -> dict:
    from lib.checkpoint import FORMAT
    from lib.data.bands import SAR_DB_RANGE
    from lib.models.factory import build_model
    model = build_model(name, args).eval()
    data = {"format": "bands", "train_bands": ["VV"], "val_bands": ["VV"], "normalization": {"VV": list(SAR_DB_RANGE)},
            "image_size": image_size}
    return {"format": FORMAT, "model": {"name": name, "args": args}, "state_dict": model.state_dict(),
                   "data": data, "metrics": {}, "epoch": 0, "parameters": {}, "constants": {}}


def onnx_files(label: str, checkpoint_path: Path, folder: Path, scene: Path, image_size: int) -> list[tuple]:
    """The float (export_onnx.py) and int8 (its static quantization) ONNX files of one checkpoint; an export
    that fails is a row saying so."""
    from lib.bench.quantize import quantize_int8
    float_path = folder / f"{label}.onnx"
    done = subprocess.run([sys.executable, str(ROOT / "export_onnx.py"), str(checkpoint_path), str(float_path)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return [(f"{label} ONNX", None, [f"export failed: {last[:160]}"])]
    int8_path = quantize_int8(float_path, folder / f"{label}.int8.onnx", calibration_tiles(scene, image_size))
    return [(f"{label} ONNX float", float_path, []), (f"{label} ONNX int8", int8_path, [])]


def calibration_tiles(scene: Path, size: int, tiles: int = CALIBRATION_TILES) -> list[np.ndarray]:
    """`tiles` normalized VV tiles along the scene's diagonal, in batches of 8 (int8 calibration)."""
    import rasterio
    from rasterio.windows import Window
    from lib.data.bands import SAR_DB_RANGE
    low, high = SAR_DB_RANGE
    with rasterio.open(scene) as dataset:
        step = max(1, (min(dataset.height, dataset.width) - size) // max(tiles - 1, 1))
        images = [dataset.read(1, window=Window(i * step, i * step, size, size)) for i in range(tiles)]
    batch = np.clip((np.nan_to_num(np.stack(images), nan=low) - low) / (high - low), 0, 1)[:, None]
    return [batch[i:i + 8].astype(np.float32) for i in range(0, tiles, 8)]


def map_once(path: Path, extra: list[str], run: str, pair: dict, folder: Path, threads: int) -> dict:
    """One `python predict.py` run in a fresh process; its wall and CPU time and the summary's timings."""
    out = folder / "out"
    out.mkdir(exist_ok=True)
    arguments = [a.format(pre=pair["pre"], out=out) for a in RUNS[run]]
    argv = [sys.executable, str(ROOT / "predict.py"), str(path), str(pair["post"]), str(out / "water.tif"),
            "--band", "VV", "--raster-band", "1", "--precision", "fp32", "--no-progress", "--no-quicklook",
            "--summary", str(out / "summary.json"), *arguments, *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=environment)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"predict.py failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    summary = json.loads((out / "summary.json").read_text())
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    megapixels = summary["width"] * summary["height"] / 1e6
    timings = summary["timings"]
    for leftover in out.iterdir():
        leftover.unlink()
    return {"end_to_end_mpx_s": megapixels / wall, "pass_mpx_s": summary["megapixels_per_s"],
            "cpu_s_per_mpx": cpu / megapixels, "total_s": wall, "tile": summary["tile"],
            "overlap": summary["overlap"], "batch_size": summary["batch_size"],
            **{stage: timings["stages_s"].get(stage, 0.0) for stage in STAGES},
            "pre_event_s": timings.get("pre_event_s", 0.0), "cog_s": timings.get("cog_s", 0.0),
            "polygons_s": timings.get("polygons_s", 0.0), "water_fraction": summary["water_fraction"]}


def measure_throughput(labels: list[str], configs: dict, o: dict) -> dict:
    """Every model file of `labels` (model_files), each run of RUNS: {"size", "rows", "environment"}."""
    from lib.runtime import cpu_has_native_bf16
    from lib.synthetic.flood_pair import write_flood_pair
    size = o["throughput_size"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_throughput_") as scratch:
        folder = Path(scratch)
        pair = write_flood_pair(folder / "pair", size)
        files = model_files(labels, configs, o["image_size"], folder, pair["post"], o.get("onnx", True))
        for label, path, extra in files:
            for run in RUNS:
                if path is None:
                    rows.append({"label": label, "run": run, "error": extra[0]})
                    continue
                row = {"label": label, "run": run, **map_once(path, extra, run, pair, folder, o["threads"])}
                print(f"throughput {label} {run}: {row['end_to_end_mpx_s']:.2f} Mpx/s end to end, "
                      f"{row['pass_mpx_s']:.2f} pass, {row['cpu_s_per_mpx']:.2f} CPU s/Mpx", flush=True)
                rows.append(row)
    return {"size": size, "image_size": o["image_size"], "rows": rows, "bf16_native": cpu_has_native_bf16(),
            "threads": o["threads"],
            "load_end": os.getloadavg()[0]}



# ------------------------------------------------------------------------------------------------ page

HEADING = "## Whole-scene mapping without bf16"
COLUMNS = ("Mpx/s end to end", "Mpx/s pass", "CPU s / Mpx", "total s", *STAGES, "pre-event pass", "COGs", "polygons")


def render_throughput(result: dict, environment: dict) -> str:
    """The page section (HEADING to the end of the section): how it was measured, on what, and a row per run."""
    size, bf16 = result["size"], "has" if result["bf16_native"] else "has no"
    lines = [HEADING, "",
             f"Written by `{result.get('command') or 'python benchmark.py --throughput --docs'}` on "
             f"{environment['date']}. Machine: {environment['cpu']}, {environment['cores']} cores, "
             f"{result['threads']} threads per predict.py process (OMP_NUM_THREADS); this CPU {bf16} native bf16, and every run uses `--precision fp32` "
             f"(channels_last stays on), as a CPU without bf16 would. Load average (1 min) at the start "
             f"{environment['load_start']:.1f}, at the end {result['load_end']:.1f}: under load wall-clock figures are "
             f"lower bounds, CPU s / Mpx (the process's CPU time per Mpx of the scene) the steadier figure.",
             "",
             f"`python predict.py` (a fresh process per run) on a {size:,} x {size:,} synthetic pre-/post-event pair "
             f"(`python -m lib.synthetic.flood_pair DIR {size}`: VV band, the pre-event scene on a grid shifted by half "
             f"a pixel, so it is reprojected), no quick-look; plain: the water mask; `--pre --polygons`: also the "
             f"pre-event pass, the change test, flood classes and polygons. Randomly initialized models (they map "
             f"almost no water, so polygonizing costs little here: docs/flood-mapping.md#memory-and-speed has it on "
             f"real class rasters); ONNX: export_onnx.py's export at {result['image_size']} px (a fixed tile) and its int8 quantization "
             f"calibrated on {CALIBRATION_TILES} tiles of the scene. Mpx/s end to end: the whole process (start-up "
             f"and imports, model load and hash, checks, every pass, COGs, polygons); pass: the post-event pass (the summary's "
             f"`megapixels_per_s`); then the summary's timings in seconds.", "",
             "| model | run | tile / overlap / batch | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(COLUMNS)]
    for row in result["rows"]:
        lines.append(throughput_row(row))
    return "\n".join(lines) + "\n"


def throughput_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['label']} | {row['run']} | {row['error']} |" + " |" * len(COLUMNS)
    values = [f"{row['end_to_end_mpx_s']:.2f}", f"{row['pass_mpx_s']:.2f}", f"{row['cpu_s_per_mpx']:.2f}",
              f"{row['total_s']:.1f}", *(f"{row[stage]:.2f}" for stage in STAGES),
              *(f"{row[key]:.2f}" for key in ("pre_event_s", "cog_s", "polygons_s"))]
    return (f"| {row['label']} | {row['run']} | {row['tile']} / {row['overlap']} / {row['batch_size']} | "
            + " | ".join(values) + " |")


def section_bounds(lines: list[str]) -> tuple[int, int] | None:
    """(first line, line after) of the HEADING section: up to the next "## " heading or the end."""
    if HEADING not in lines:
        return None
    start = lines.index(HEADING)
    return start, next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))


def with_section(page: str | None, section: str) -> str:
    """`page` with its HEADING section replaced by `section`, or `section` appended; the section alone
    when there is no page."""
    if not page:
        return section
    lines = page.rstrip("\n").split("\n")
    bounds = section_bounds(lines)
    if bounds is None:
        return "\n".join(lines) + "\n\n" + section
    before, after = lines[:bounds[0]], lines[bounds[1]:]
    return "\n".join(before) + "\n" + section + ("\n" + "\n".join(after) + "\n" if after else "")


def section_of(page: str | None) -> str | None:
    """The HEADING section of an existing page (the full benchmark keeps it when it rewrites the page)."""
    lines = (page or "").rstrip("\n").split("\n")
    bounds = section_bounds(lines)
    return None if bounds is None else "\n".join(lines[bounds[0]:bounds[1]]).rstrip("\n") + "\n"
