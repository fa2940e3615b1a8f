"""Convert a public SAR flood dataset from its release format into the band-agnostic 02_kfold layout, and
report what the data looks like to the model.

    python prepare_data.py sen1floods11 Sen1Floods11/v1.1 --out data/sen1floods11
    python prepare_data.py sen1floods11 Sen1Floods11/v1.1 --out data/s1f11_cv --folds 5 --group-by region
    python prepare_data.py s1-chips stac_overflow/ --out data/stac --folds 5
    python prepare_data.py s1-chips c2s_ms/ --image-pattern '{chip}_S1Hand.tif' --label-pattern '{chip}_S1LabelHand.tif'
    python prepare_data.py geotiff scenes/ --bands VV,VH --out data/scenes --stride 128
    python prepare_data.py report data/sen1floods11

Writes {split}/img/{patch_id}_{band}.npy (float32 in the bands' units, NaN no-data) and
{split}/lab/{patch_id}.npy (uint8: 1 water, 0 not water, 255 no-data); patch ids are {chip}_r{i}c{j}, the
window at pixel (i * stride, j * stride) of the chip. Every run also writes prepare.json (provenance) and
data_report.md/.json/.png. docs/prepare-data.md has the whole path from each download to training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.cli import run
from lib.errors import ConfigError

OUT = "02_kfold"
PATCH = 256
SEED = 42                    # as the training scripts
VAL_SHARE = 0.2              # formats without official splits, without --folds: share of chips for val
GROUP_BY = "chip"
MIN_VALID = {"sen1floods11": 0.0, "s1-chips": 0.0, "geotiff": 0.5}  # patches with no valid pixel always go
S1_CHIPS = {"image_pattern": "{chip}_vv.tif,{chip}_vh.tif", "label_pattern": "{chip}.tif", "bands": "VV,VH",
            "water": "1", "land": "0", "nodata": "255", "image_nodata": "0"}   # STAC Overflow / C2S
GEOTIFF = {"image_pattern": "images/{chip}.tif", "label_pattern": "labels/{chip}.tif",
           "water": "1", "land": "0", "nodata": "255", "image_nodata": "none"}


def values(text: str, option: str) -> tuple[float, ...]:
    """"1,2" -> (1.0, 2.0); "none" -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(item) for item in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected numbers separated by commas, or none") from None


def common(parser: argparse.ArgumentParser, fmt: str) -> None:
    parser.add_argument("source", type=Path, help="the dataset folder as downloaded (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path(OUT), help=f"output folder (default {OUT})")
    parser.add_argument("--folds", type=int, help="write fold_1 .. fold_K, each with train/ and val/")
    parser.add_argument("--group-by", default=GROUP_BY,
                        help="what stays on one side: chip (default), region (name up to the first _), or a regex")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the split/fold assignment (default {SEED})")
    parser.add_argument("--patch", type=int, default=PATCH, help=f"patch size in pixels (default {PATCH})")
    parser.add_argument("--stride", type=int, help="patch grid step (default: the patch size)")
    parser.add_argument("--val-share", type=float, default=VAL_SHARE,
                        help=f"without official splits or --folds: share of chips for val (default {VAL_SHARE})")
    parser.add_argument("--min-valid", type=float, default=MIN_VALID[fmt],
                        help=f"drop patches with a smaller share of valid pixels (default {MIN_VALID[fmt]})")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that holds data")


def labelled(parser: argparse.ArgumentParser, defaults: dict) -> None:
    parser.add_argument("--bands", default=defaults.get("bands"), help="the image bands in order, e.g. VV,VH"
                        + (f" (default {defaults['bands']})" if defaults.get("bands") else " (required)"))
    parser.add_argument("--image-pattern", default=defaults["image_pattern"],
                        help=f"image file(s), comma-separated, one per band or one multi-band file (default "
                             f"{defaults['image_pattern']}); with a / relative to SOURCE, else anywhere below it")
    parser.add_argument("--label-pattern", default=defaults["label_pattern"],
                        help=f"label file (default {defaults['label_pattern']})")
    for name, meaning in (("water", "water"), ("land", "not water"), ("nodata", "no-data")):
        parser.add_argument(f"--{name}", default=defaults[name],
                            help=f"label value(s) meaning {meaning} (default {defaults[name]})")
    parser.add_argument("--image-nodata", default=defaults["image_nodata"],
                        help=f"image value that means missing, besides the raster's nodata tag and NaN "
                             f"(default {defaults['image_nodata']})")
    parser.add_argument("--ignore-nodata-tag", action="store_true", help="do not honour the label raster's nodata tag")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    sen = formats.add_parser("sen1floods11", allow_abbrev=False, help="Sen1Floods11 hand-labelled release")
    common(sen, "sen1floods11")
    sen.add_argument("--split-dir", type=Path, help="folder of the flood_*_data.csv split files (default: found below SOURCE)")
    chips = formats.add_parser("s1-chips", allow_abbrev=False, help="VV/VH dB chips and label rasters by file-name pattern")
    common(chips, "s1-chips")
    labelled(chips, S1_CHIPS)
    scenes = formats.add_parser("geotiff", allow_abbrev=False, help="any (image, label) GeoTIFF pairs, whole scenes too")
    common(scenes, "geotiff")
    labelled(scenes, GEOTIFF)
    report = formats.add_parser("report", allow_abbrev=False, help="data report of an existing layout")
    report.add_argument("data_root", type=Path, help="a 02_kfold-style folder (splits, or fold_k/train and fold_k/val)")
    report.add_argument("--out", type=Path, help="where data_report.* go (default: DATA_ROOT)")
    return parser.parse_args(argv)


def make_source(args):
    from lib.prepare.sources import LabelOptions, PatternChips, Sen1Floods11
    if args.format == "sen1floods11":
        return Sen1Floods11(args.source, args.split_dir)
    if not args.bands:
        raise ConfigError(f"{args.format}: --bands is required (the image bands in order, e.g. --bands VV,VH)")
    labels = LabelOptions(values(args.water, "--water"), values(args.land, "--land"), values(args.nodata, "--nodata"),
                          honour_tag=not args.ignore_nodata_tag)
    image_nodata = values(args.image_nodata, "--image-nodata")
    if len(image_nodata) > 1:
        raise ConfigError(f"--image-nodata {args.image_nodata!r}: one value, or none")
    return PatternChips(args.format, args.source, args.image_pattern.split(","), args.label_pattern,
                        [b.strip() for b in args.bands.split(",")], labels, image_nodata[0] if image_nodata else None)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.format == "report":
        from lib.prepare.report import markdown, write_report
        out = args.out or args.data_root
        report = write_report(args.data_root, out=out)
        print(markdown(report))
        print(f"wrote {out}/data_report.md, .json and .png")
        return report
    from lib.prepare.convert import Options, prepare
    options = Options(out=args.out, patch=args.patch, stride=args.stride, folds=args.folds, seed=args.seed,
                      group_by=args.group_by, val_share=args.val_share, min_valid=args.min_valid,
                      overwrite=args.overwrite)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    return prepare(make_source(args), options, settings)


def main_command() -> None:
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # a conversion removes its staging folder on the way out (lib/prepare/convert.py)
        converting = sys.argv[1:2] != ["report"]
        print("interrupted" + (": nothing was written to --out (an existing one is as it was)" if converting else ""),
              file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    run(main_command)
