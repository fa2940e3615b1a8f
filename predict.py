"""Map water in a whole scene: tiled, overlapping, blended inference in bounded memory.

    python predict.py runs/pspmixer/best.pt scene_vv_db.tif water.tif
    python predict.py runs/unetlight/best.pt scene.tif water.tif --band VH --raster-band 2 --probability p.tif
    python predict.py runs/pspnet/best.pt vv_linear.npy water.tif --units linear --overlap 96
    python predict.py runs/unet_classic_k5/best.pt WTR00533_K5.tif water.tif     # KOMPSAT-5 HH amplitude DN

Input: a single-band raster of any size (GeoTIFF or anything GDAL reads, or a .npy array): SAR
backscatter in dB, or linear power with --units linear; KOMPSAT-5 checkpoints expect HH amplitude DN.
Output: a uint8 GeoTIFF, 1 water, 0 not water, 255 no-data (NaN/inf or the raster's nodata value in the
input), with the input's CRS, transform and size; a float32 probability GeoTIFF with --probability; a
PNG quick-look (default OUTPUT with .png). The normalization and the default tile size come from the
checkpoint; the engine is lib/inference.py (tiles blended over their overlap, strips of one tile row in
memory, so any scene size runs in bounded memory).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lib.checkpoint import CheckpointError
from lib.inference import UNITS, InferenceError, predict_file
from lib.onnx_model import load_model_any
from lib.runtime import keep_freed_memory, resolve_device, speed_settings

BATCH_SIZE = {"cpu": 8, "cuda": 32}  # tiles per forward pass
THRESHOLD = 0.5        # water where the blended probability >= THRESHOLD


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", type=Path, help="a best.pt / last.pt written by a train script")
    parser.add_argument("input", type=Path, help="single-band raster (GeoTIFF, ...) or .npy")
    parser.add_argument("output", type=Path, help="water mask GeoTIFF (uint8: 1 water, 0 not, 255 no-data)")
    parser.add_argument("--band", help="which band the input is (VV, VH, ...): picks the normalization "
                                       "range; default the checkpoint's first validation band")
    parser.add_argument("--raster-band", type=int, default=1, help="band of a multi-band input to read (1-based)")
    parser.add_argument("--units", choices=UNITS,
                        help="input units: db; linear power (10*log10 first); amplitude digital numbers "
                             "(20*log10(DN) + the checkpoint's calibration, DN 0 = no-data). Default: amplitude "
                             "for KOMPSAT-5 checkpoints, else db")
    parser.add_argument("--tile", type=int, help="tile side in pixels (default the checkpoint's image_size)")
    parser.add_argument("--overlap", type=int, help="overlap of neighbouring tiles in pixels (default tile/4)")
    parser.add_argument("--batch-size", type=int, help=f"tiles per forward pass (default {BATCH_SIZE['cpu']} on CPU, "
                                                         f"{BATCH_SIZE['cuda']} on CUDA)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help=f"probability threshold ({THRESHOLD})")
    parser.add_argument("--probability", type=Path, help="also write float32 water probabilities here")
    parser.add_argument("--quicklook", type=Path, help="PNG quick-look (default OUTPUT with .png)")
    parser.add_argument("--no-quicklook", action="store_true", help="skip the quick-look")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--precision", default="auto",
                        help="auto (bf16 autocast on CUDA and on CPUs with native bf16, with channels_last; "
                             "else fp32), fp32, bf16, fp16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    batch_size = args.batch_size or BATCH_SIZE.get(device.type, BATCH_SIZE["cpu"])
    if device.type == "cpu":
        keep_freed_memory()  # 2-4x faster batches on CPU (see lib/runtime.py)
    quicklook = None if args.no_quicklook else (args.quicklook or args.output.with_suffix(".png"))
    speed = speed_settings({"PRECISION": args.precision}, device)
    try:
        model, checkpoint = load_model_any(args.checkpoint, device)  # a .pt checkpoint or an exported .onnx
        if speed["channels_last"]:
            model.to(memory_format=torch.channels_last)
        summary = predict_file(model, checkpoint["data"], args.input, args.output, band=args.band, units=args.units,
                               raster_band=args.raster_band, tile=args.tile, overlap=args.overlap,
                               batch_size=batch_size, threshold=args.threshold,
                               probability_path=args.probability, quicklook_path=quicklook, device=device,
                               progress=not args.no_progress, precision=speed["precision"])
    except (CheckpointError, InferenceError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{checkpoint['model']['name']} on {args.input}: {summary['width']} x {summary['height']} px, "
          f"band {summary['band']} ({summary['units']}), {summary['tiles']} tiles of {summary['tile']} px "
          f"(overlap {summary['overlap']}), {speed['precision']}, {summary['seconds']:.1f} s ({summary['megapixels_per_s']:.2f} Mpx/s); "
          f"water {100 * summary['water_fraction']:.1f}% of valid pixels, {summary['nodata_pixels']:,} no-data px")
    print(f"wrote {args.output}" + "".join(f", {p}" for p in (args.probability, quicklook) if p))
    return summary


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
