"""Write a synthetic SAR flood dataset to try the pipeline without real data.

    python make_demo_data.py                        # 60 train + 20 val patches in 02_kfold/
    python make_demo_data.py --folds 5              # 02_kfold/fold_1 .. fold_5 instead
    python make_demo_data.py --figure docs/demo_patches.png

A folder that already holds other patches than demo ones (a prepared real dataset) is refused: the demo
would be mixed into it; --overwrite deletes those patches first.

Patches are 256 x 256 scenes with rivers, lakes and floods, Sentinel-1 VV/VH in dB with speckle and
confusers (roads, radar shadow, wind-roughened water, flooded vegetation), Sentinel-2 B2/B3/B4,
NDVI and NDWI, and labels 1 water / 0 not water / 255 no-data. See lib/synthetic/demo.py for the layout.
"""
import argparse

from lib.cli import run
from lib.synthetic.demo import make_demo_dataset
from lib.synthetic.figure import render_demo_figure

OUTPUT_DIR = "02_kfold"
N_TRAIN = 60     # 60 + 20: the quick start fits in 5 minutes on 2 cores without bf16 (docs/training.md)
N_VAL = 20
FOLDS = 0      # 0: ROOT/train + ROOT/val; K > 0: ROOT/fold_1 .. ROOT/fold_K
SEED = 42
SIZE = 256


def main():
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUTPUT_DIR, help="dataset root (default: %(default)s)")
    parser.add_argument("--train", type=int, default=N_TRAIN, help="training patches (default: %(default)s)")
    parser.add_argument("--val", type=int, default=N_VAL, help="validation patches (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=FOLDS,
                        help="K > 0 writes fold_1..fold_K over the pooled patches (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--size", type=int, default=SIZE, help="patch side in pixels (default: %(default)s)")
    parser.add_argument("--figure", metavar="PATH", help="also draw a few patches into this PNG")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset in --out that is not demo data (its img/ and lab/ patches are deleted)")
    args = parser.parse_args()

    try:
        summary = make_demo_dataset(args.out, n_train=args.train, n_val=args.val, folds=args.folds,
                                    seed=args.seed, size=args.size, overwrite=args.overwrite)
    except ValueError as error:
        parser.error(str(error))
    layout = f"{args.folds} folds" if args.folds else f"{args.train} train / {args.val} val"
    line = (f"wrote {summary['n_patches']} patches ({layout}, {args.size}px) to {summary['root']} "
            f"in {summary['seconds']:.1f} s; water {100 * summary['water_fraction']:.1f}% of labelled pixels, "
            f"{summary['dry_patches']} dry patches")
    if summary["removed"]:
        line += f"; removed the {summary['removed']} patch files of the dataset that was there (--overwrite)"
    if args.figure:
        line += f"; figure {render_demo_figure(args.out, args.figure)}"
    print(line)


if __name__ == "__main__":
    run(main)
