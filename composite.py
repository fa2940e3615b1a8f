"""Maximum flood extent over several dated scenes of one area, with the date of first flooding per pixel.

    python composite.py max_extent.tif flood_2024-01-05.tif flood_2024-01-17.tif --first-date first.tif
    python composite.py max_extent.tif a/flood.tif@2024-01-05 b/flood.tif@2024-01-17 --first-date first.tif

Inputs: predict.py --flood rasters (0 dry, 1 flood, 2 permanent or pre-event water, 255 no-data), each
dated PATH@YYYY-MM-DD or by a date in its name; read on the first one's grid (any CRS or resolution).
Outputs (COGs, tagged with the inputs and dates): the extent, 1 flood on any date, 2 water before and
never flood, 0 dry on every date that saw the pixel, 255 never seen; --first-date, int32 YYYYMMDD of the
first date with flood, 0 never flooded. Details: lib/mapping/composite.py, docs/flood-mapping.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.errors import InferenceError
from lib.mapping.composite import parse_dated, write_composite


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("extent", type=Path, help="maximum extent COG to write (uint8 classes)")
    parser.add_argument("floods", nargs="+", metavar="FLOOD[@DATE]", help="flood rasters of predict.py, dated")
    parser.add_argument("--first-date", type=Path, help="int32 COG of the date of first flooding (YYYYMMDD)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    dated = [parse_dated(text) for text in args.floods]
    for path, _ in dated:
        if not path.is_file():
            raise InferenceError(f"{path}: flood raster not found")
    report = write_composite(dated, args.extent, args.first_date)
    pixels = report["pixels"]
    print(f"{len(dated)} dates {', '.join(map(str, report['dates']))}: flood on any date {pixels['flood']:,} px, "
          f"water before {pixels['water_before']:,} px, dry {pixels['dry']:,} px, never seen "
          f"{pixels['never_observed']:,} px; wrote {args.extent}" + (f", {args.first_date}" if args.first_date else ""))
    return report


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
