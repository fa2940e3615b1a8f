"""IoU against cost for every trained model: latency and GFLOPs on log axes, the Pareto front, PNG + CSV.

    python pareto.py runs/                                  # every run folder under runs/
    python pareto.py runs/kd_study runs/pspnet runs/evaluation/evaluation.json --out runs/pareto

Each RUN is a run folder (its summary.json: the best validation IoU), a folder searched for them, or an
evaluation.json of evaluate.py (its rows: checkpoints and .onnx files, int8 students among them). Costs:
GFLOPs per patch (torch.utils.flop_counter), parameters used, CPU latency at batch 1 and 32 (short
fp32 timings; .onnx files through onnxruntime). Writes pareto.csv and pareto.png to --out and prints the
models on the front. See docs/distillation-methods.md.
"""
import argparse
import sys
from pathlib import Path

from lib.cli import run
from lib.bench.pareto import COSTS, pareto

OUTPUT_DIR = "runs/pareto"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, folders of runs, evaluation.json files")
    parser.add_argument("--out", type=Path, default=Path(OUTPUT_DIR), help=f"output folder (default {OUTPUT_DIR})")
    parser.add_argument("--title", default="IoU against cost", help="figure title")
    args = parser.parse_args(argv)
    points, skipped = pareto(args.runs, args.out, args.title)
    for line in skipped:
        print(f"skipped {line}")
    print(f"{len(points)} model(s){f', {len(skipped)} source(s) skipped' if skipped else ''}")
    for p in sorted(points, key=lambda p: p["latency_ms_b1"]):
        fronts = ", ".join(c for c in COSTS if p[f"front_{c}"]) or "-"
        print(f"  {p['label']:<40} {p['kind']:<9} IoU {p['iou']:.3f}  {p['gflops']:.3g} GFLOPs  "
              f"{p['latency_ms_b1']:.1f} ms b1  {p['latency_ms_b32']:.1f} ms b32  front: {fronts}")
    print(f"wrote {args.out / 'pareto.csv'} and {args.out / 'pareto.png'}")
    return points


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]))
