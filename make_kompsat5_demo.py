"""Write a synthetic KOMPSAT-5 water dataset in the published layout, to try the KOMPSAT-5 scripts without
real data.

    python make_kompsat5_demo.py                          # 8 train + 2 val scenes of 1024 x 1024 in data_k5/
    python make_kompsat5_demo.py --out /tmp/k5 --size 512
    python train_hrnet.py DATA_FORMAT=kompsat5 DATA_ROOT=data_k5

Writes DATA_ROOT/train_full/img/WTR*_K5_SYN01.tif (uint16 HH amplitude DN with speckle; DN 0 = no-data
at a swath edge in some scenes), DATA_ROOT/train_full/mask/*_label.tif (uint16: 255 water, 0 land) and the
list files DATA_ROOT/train_full/train.txt and val.txt (image<TAB>mask, relative to DATA_ROOT), EPSG:32652,
3 m pixels. See lib/data/kompsat5/ (the layout) and lib/synthetic/kompsat5.py (the generator).
"""
import argparse

from lib.synthetic.kompsat5 import make_kompsat5_dataset

OUTPUT_DIR = "data_k5"
N_TRAIN = 8
N_VAL = 2
SIZE = 1024    # scene side in pixels (the published scenes are 1024 x 1024)
SEED = 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUTPUT_DIR, help="dataset root, i.e. DATA_ROOT (default: %(default)s)")
    parser.add_argument("--train", type=int, default=N_TRAIN, help="training scenes (default: %(default)s)")
    parser.add_argument("--val", type=int, default=N_VAL, help="validation scenes (default: %(default)s)")
    parser.add_argument("--size", type=int, default=SIZE, help="scene side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args()

    try:
        s = make_kompsat5_dataset(args.out, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    water, land = s["db_water"], s["db_land"]
    print(f"wrote {s['n_scenes']} scenes ({s['n_train']} train / {s['n_val']} val, {s['size']}px) to {s['root']} "
          f"in {s['seconds']:.1f} s; water {100 * s['water_fraction']:.1f}% of valid pixels, {s['dry_scenes']} dry "
          f"scenes, {s['nodata_scenes']} with a no-data edge; 20*log10(DN) median water "
          f"{water.get('p50', float('nan')):.1f} dB, land {land.get('p50', float('nan')):.1f} dB; "
          f"lists {', '.join(s['lists'])}")


if __name__ == "__main__":
    main()
