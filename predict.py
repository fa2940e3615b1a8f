"""Map water and floods in whole scenes: tiled, overlapping, blended inference in bounded memory.

    python predict.py runs/pspmixer/best.pt scene_vv_db.tif water.tif
    python predict.py runs/unetlight/best.pt scene.tif water.tif --band VH --raster-band 2 --probability p.tif
    python predict.py runs/pspnet/best.pt vv_linear.npy water.tif --units linear --overlap 96
    python predict.py runs/unet_classic_k5/best.pt WTR00533_K5.tif water.tif     # KOMPSAT-5 HH amplitude DN
    python predict.py best.pt post.tif water.tif --pre pre.tif --flood flood.tif --polygons flood.gpkg \
        --summary summary.json --min-area-m2 5000 --tta flip --uncertainty std.tif
    python predict.py best.pt S1.tif water.tif --band VV,VH --raster-band 1,2 --fuse mean   # both polarisations
    python predict.py vvvh.pt vv.tif vh.tif water.tif      # a checkpoint trained with INPUT_BANDS=VV+VH
    python predict.py best.pt post_vh.tif water.tif --band VH --method threshold --pre pre_vh.tif --flood f.tif
    python predict.py best.pt 'scenes/*.tif' --out-dir maps --flood flood.tif --resume-batch  # many scenes

Input: a raster of any size (GeoTIFF or anything GDAL reads, or a .npy array): SAR backscatter in dB, or
linear power with --units linear; KOMPSAT-5 checkpoints expect HH amplitude DN. One band is read
(--raster-band), or several (--band VV,VH with --raster-band 1,2, or one file per band before OUTPUT),
each mapped by the model and fused. A checkpoint trained with the bands stacked as input channels
(INPUT_BANDS=VV+VH) takes exactly those bands (--band defaults to them), all at once: one probability, no
fusion (--fuse unused), no-data where any band is; --method threshold/ensemble and --flags use one of its
bands (--threshold-band, default VH when it is one); the --pre change test averages the bands' log-ratios.
Output: a uint8 Cloud-Optimized GeoTIFF, 1 water, 0 not water, 255 no-data (NaN/inf or the raster's
nodata value in the input), with the input's CRS, transform and size; a float32 probability COG with
--probability; a PNG quick-look (default OUTPUT with .png). Flood products (docs/flood-mapping.md):
--flood classes 0 dry, 1 flood, 2 permanent or pre-event water, 3 water now without a change (--pre's
change test, --change-db), 255 no-data against --pre and/or --reference-water, with --exclude; --polygons
(.gpkg / .geojson) with true areas; --summary JSON; --uncertainty (std over TTA views / bands; refused without
either); the layers of an operational product: --observed-water, --reference-out, --exclusion-out,
--likelihood, --flags, --footprint and a flood.png quick-look beside --flood, every GeoTIFF tagged with classes
or units and provenance. Every option and input is checked before any output is
created; outputs are written under temporary names and renamed when complete. The engine is
lib/mapping/tiling.py, one scene lib/mapping/scene.py (module map: lib/mapping/__init__.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from lib.checkpoint import file_sha256
from lib.errors import InferenceError, ReportedError
from lib.mapping.change import parse_change_db
from lib.mapping.batch import expand_inputs, map_batch, torch_gather
from lib.mapping.scene import FUSE, TTA, UNITS, SceneOptions, SceneOutputs, map_scene
from lib.bench.onnx_model import load_model_any
from lib.runtime import keep_freed_memory, resolve_device, speed_settings

BATCH_SIZE = {"cpu": 8, "cuda": 32}  # tiles per forward pass
THRESHOLD = 0.5        # water where the blended probability >= THRESHOLD
METHOD = "model"       # what maps the water: model, threshold, ensemble (lib/mapping/methods.py)


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers like 1 or 1,2, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", type=Path, help="a best.pt / last.pt written by a train script")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="scene raster(s) (GeoTIFF, ... or .npy; one per band with --band VV,VH) then the water "
                             "mask (uint8: 1 water, 0 not, 255 no-data); with --out-dir only scenes (files or globs)")
    parser.add_argument("--band", help="which band the input is (VV, VH, ...): picks the normalization range; "
                                       "VV,VH maps both and fuses them; default the checkpoint's first validation band "
                                       "(a stacked checkpoint's: its INPUT_BANDS, which it needs, in any order)")
    parser.add_argument("--raster-band", type=int_list, help="band(s) of a multi-band input to read (1-based; 1,2 "
                                                             "with --band VV,VH; default 1, or 1..n for n bands)")
    parser.add_argument("--units", choices=UNITS,
                        help="input units: db; linear power (10*log10 first); amplitude digital numbers "
                             "(20*log10(DN) + the checkpoint's calibration, DN 0 = no-data). Default: amplitude "
                             "for KOMPSAT-5 checkpoints, else db")
    parser.add_argument("--tile", type=int, help="tile side in pixels (default the checkpoint's image_size)")
    parser.add_argument("--overlap", type=int, help="overlap of neighbouring tiles in pixels (default tile/4)")
    parser.add_argument("--batch-size", type=int, help=f"tiles per forward pass (default {BATCH_SIZE['cpu']} on CPU, "
                                                         f"{BATCH_SIZE['cuda']} on CUDA)")
    parser.add_argument("--method", default=METHOD, help="model, threshold (per-scene split of the band's "
                        f"histogram) or ensemble (both); default {METHOD}, the best with a checkpoint trained on real "
                        f"SAR; with a demo-trained one, ensemble (or threshold) on VH maps better (docs/flood-mapping.md)")
    parser.add_argument("--threshold-band", help="checkpoint trained with INPUT_BANDS: the band of --method "
                        "threshold/ensemble and of --flags' contrast test (default VH when an input band, else the first)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help=f"probability threshold ({THRESHOLD})")
    parser.add_argument("--probability", type=Path, help="also write float32 water probabilities here")
    parser.add_argument("--quicklook", type=Path, help="PNG quick-look (default OUTPUT with .png)")
    parser.add_argument("--no-quicklook", action="store_true", help="skip the quick-look")
    flood = parser.add_argument_group("flood products (docs/flood-mapping.md)")
    flood.add_argument("--pre", help="pre-event scene (same band and units, any grid; files joined by commas for "
                                     "one per band; with --out-dir a pattern with {stem} or one file for all)")
    flood.add_argument("--change-db", default="auto",
                       help="with --pre, flood also needs a decrease of the backscatter (post minus pre, dB) below "
                            "this: auto (fitted per scene), a negative number (-3), or off (docs/flood-mapping.md)")
    flood.add_argument("--reference-water", type=Path, help="permanent-water raster (any grid), e.g. JRC occurrence")
    flood.add_argument("--reference-threshold", type=float,
                       help="reference water where the raster >= this (default: non-zero), e.g. 50 for occurrence %%")
    flood.add_argument("--exclude", type=Path, help="raster where non-zero means SAR cannot see flooding: no-data")
    flood.add_argument("--flood", type=Path, help="flood classes GeoTIFF: 0 dry, 1 flood, 2 permanent or pre-event "
                                                  "water, 255 no-data (with a colour table)")
    flood.add_argument("--polygons", type=Path, help="flood (or water) polygons, .gpkg or .geojson")
    flood.add_argument("--min-area-m2", type=float, default=0.0, help="drop polygons smaller than this (m2)")
    flood.add_argument("--simplify-m", type=float, default=0.0, help="polygon simplification tolerance in metres")
    flood.add_argument("--summary", type=Path, help="JSON: class areas, no-data share, model, inputs, timings")
    flood.add_argument("--fuse", choices=FUSE, default="mean", help="fusion of several bands' probabilities "
                                                                     "(unused by a stacked checkpoint: one probability)")
    flood.add_argument("--tta", choices=TTA, default="none", help="test-time augmentation: flip (4 views), d4 (8)")
    flood.add_argument("--uncertainty", type=Path, help="float32 GeoTIFF: std of the probabilities over the TTA "
                                                        "views and fused bands")
    add_layer_arguments(parser)
    batch = parser.add_argument_group("many scenes")
    batch.add_argument("--out-dir", type=Path, help="map every INPUT into DIR (DIR/<scene>_water.tif, "
                                                    "DIR/<scene>_<name of each output option>, DIR/summary.csv)")
    batch.add_argument("--resume-batch", action="store_true", help="with --out-dir: skip scenes already complete")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--precision", default="auto",
                        help="auto (bf16 autocast on CUDA and on CPUs with native bf16, with channels_last; "
                             "else fp32), fp32, bf16, fp16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_intermixed_args(argv)  # options may stand between the paths, as before


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    layers = parser.add_argument_group("layers of an operational product (docs/flood-mapping.md#layers)")
    layers.add_argument("--observed-water", type=Path, help="uint8 COG: 1 water now or before (flood plus "
                                                             "reference / pre-event water), 0 not, 255 no-data")
    layers.add_argument("--reference-out", type=Path, help="uint8 COG: --reference-water on the scene's grid")
    layers.add_argument("--exclusion-out", type=Path, help="uint8 COG: --exclude on the scene's grid")
    layers.add_argument("--likelihood", type=Path, help="uint8 COG: calibrated water probability, 0-100 %%")
    layers.add_argument("--temperature", type=float, help="temperature of the likelihood, from calibrate.py "
                                                          "(default the checkpoint's calibration, else 1)")
    layers.add_argument("--flags", type=Path, help="uint8 COG of advisory bits: 1 no-data, 2 low backscatter "
                                                   "contrast, 4 steep slope (with --dem), 8 excluded")
    layers.add_argument("--dem", type=Path, help="elevation raster (any grid, metres) for the steep-slope flag")
    layers.add_argument("--footprint", type=Path, help="footprint of the valid pixels, .gpkg or .geojson")


def layer_outputs(args, flood: Path | None, quicklook: bool) -> dict:
    """SceneOutputs' layer fields; the flood quick-look beside a --flood GeoTIFF (flood.png)."""
    wanted = {name: getattr(args, name) for name in ("observed_water", "reference_out", "exclusion_out",
                                                       "likelihood", "flags", "footprint")}
    wanted["flood_quicklook"] = flood.with_suffix(".png") if flood and quicklook else None
    return wanted


def scene_options(args, batch_size: int, device, precision: str) -> SceneOptions:
    return SceneOptions(bands=args.band.split(",") if args.band else None, raster_bands=args.raster_band,
                        units=args.units, tile=args.tile, overlap=args.overlap, batch_size=batch_size,
                        threshold=args.threshold, tta=args.tta, fuse=args.fuse, device=device, precision=precision,
                        progress=not args.no_progress,
                        pre=[Path(p) for p in args.pre.split(",")] if args.pre else None,
                        reference_water=args.reference_water, reference_threshold=args.reference_threshold,
                        exclude=args.exclude, min_area_m2=args.min_area_m2, simplify_m=args.simplify_m,
                        change_db=parse_change_db(args.change_db), method=args.method,
                        temperature=args.temperature, dem=args.dem, threshold_band=args.threshold_band)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return predict(args)
    except ReportedError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; the temporary outputs are already removed
        kept = (f"the scenes finished so far are in {args.out_dir}; continue with --resume-batch" if args.out_dir
                else "no output was written or replaced")
        print(f"interrupted: {kept}", file=sys.stderr)
        raise SystemExit(130) from None  # 128 + SIGINT, the shell's code for Ctrl-C


def predict(args) -> dict:
    if args.resume_batch and not args.out_dir:
        raise InferenceError("--resume-batch needs --out-dir")
    if args.out_dir is None and len(args.paths) < 2:
        raise InferenceError("give INPUT and OUTPUT (or scenes with --out-dir DIR)")
    rank, world_size = 0, 1
    if args.out_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InferenceError("under torchrun the scenes of a batch are shared among the processes: "
                             "give the scenes with --out-dir DIR")
    if args.out_dir is not None:
        from lib.runtime import distributed_context
        rank, world_size, device = distributed_context(args.device)
    else:
        device = resolve_device(args.device)
    batch_size = BATCH_SIZE.get(device.type, BATCH_SIZE["cpu"]) if args.batch_size is None else args.batch_size
    if device.type == "cpu":
        keep_freed_memory()  # 2-4x faster batches on CPU (see lib/runtime.py)
    speed = speed_settings({"PRECISION": args.precision}, device)
    options = scene_options(args, batch_size, device, speed["precision"])
    model, checkpoint = load_model_any(args.checkpoint, device)  # a .pt checkpoint or an exported .onnx
    options.baseline = checkpoint.get("baseline")  # the threshold method's fallback
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    # hashed here once: a batch's every scene summary records it (map_scene would hash it per scene)
    model_info = {"name": checkpoint["model"]["name"], "args": checkpoint["model"].get("args"),
                  "checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint)}
    if args.out_dir is not None:
        return run_batch(args, model, checkpoint, options, model_info, rank, world_size)
    *inputs, output = [Path(p) for p in args.paths]
    quicklook = None if args.no_quicklook else (args.quicklook or output.with_suffix(".png"))
    outputs = SceneOutputs(mask=output, probability=args.probability, quicklook=quicklook, flood=args.flood,
                           polygons=args.polygons, summary=args.summary, uncertainty=args.uncertainty,
                           **layer_outputs(args, args.flood, not args.no_quicklook))
    summary = map_scene(model, checkpoint["data"], inputs, outputs, options, model_info=model_info)
    print(f"{checkpoint['model']['name']} on {', '.join(map(str, inputs))}: {summary['width']} x {summary['height']} "
          f"px, band {summary['band']} ({summary['units']}), {summary['tiles']} tiles of {summary['tile']} px "
          f"(overlap {summary['overlap']}), {speed['precision']}, tta {summary['tta']}, {summary['seconds']:.1f} s "
          f"({summary['megapixels_per_s']:.2f} Mpx/s); water {100 * summary['water_fraction']:.1f}% of valid "
          f"pixels, {summary['nodata_pixels']:,} no-data px")
    if summary["flood"]:
        classes = summary["flood"]["classes"]
        print("flood classes: " + ", ".join(
            f"{name} {c['pixels']:,} px" + ("" if c["area_km2"] is None else f" ({c['area_km2']:.4g} km2)")
            for name, c in classes.items()) + f", no-data {100 * summary['flood']['nodata_share']:.1f}%")
    if summary["polygons"]:
        print(f"{summary['polygons']['polygons']} polygons ({summary['polygons']['dropped_below_min_area']} "
              f"below --min-area-m2 dropped)")
    print("wrote " + ", ".join(summary["outputs"].values()))
    return summary


def run_batch(args, model, checkpoint, options: SceneOptions, model_info: dict, rank: int, world_size: int) -> dict:
    import torch.distributed as dist
    scenes = expand_inputs(args.paths)
    template = SceneOutputs(mask=Path("water.tif"), probability=args.probability,
                            quicklook=None if args.no_quicklook else Path("water.png"), flood=args.flood,
                            polygons=args.polygons, summary=args.summary, uncertainty=args.uncertainty,
                            **layer_outputs(args, args.flood, not args.no_quicklook))
    pre = args.pre.split(",") if args.pre else None
    gather = torch_gather if world_size > 1 else None
    rows = map_batch(model, checkpoint["data"], scenes, args.out_dir, template, options, pre=pre,
                     resume=args.resume_batch, rank=rank, world_size=world_size, gather=gather,
                     model_info=model_info, log=lambda m: print(m, file=sys.stderr))
    if world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
    failed = [r for r in rows if r["status"] == "failed"]
    if rank == 0:
        done = sum(r["status"] == "ok" for r in rows)
        skipped = sum(r["status"].startswith("skipped") for r in rows)
        print(f"{len(rows)} scenes: {done} mapped, {skipped} skipped (complete), {len(failed)} failed; "
              f"wrote {args.out_dir / 'summary.csv'}")
    if failed:
        raise InferenceError(f"{len(failed)} of {len(rows)} scenes failed: "
                             + "; ".join(f"{r['scene']}: {r['error']}" for r in failed[:3])
                             + (" ..." if len(failed) > 3 else "") + f" (see {args.out_dir / 'summary.csv'})")
    return {"scenes": rows}


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's kill, `timeout`) unwinds like Ctrl-C, so the temporary outputs are removed."""
    import signal

    def stop(signum, frame):
        raise SystemExit(f"error: stopped by signal {signum}; no output was renamed to its final name")
    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    from lib.cli import run
    stop_on_sigterm()
    run(lambda: main(sys.argv[1:]))
