"""IoU against cost for every trained model: latency and GFLOPs on log axes, the Pareto front, PNG + CSV.

    python pareto.py runs/                                  # every run folder under runs/
    python pareto.py runs/kd_study runs/pspnet runs/evaluation/evaluation.json --out runs/pareto

Each RUN is a run folder (its summary.json: the best validation IoU), a folder searched for them, or an
evaluation.json of evaluate.py (its rows: checkpoints and .onnx files, int8 students among them). Costs:
GFLOPs per patch (torch.utils.flop_counter), parameters used, CPU latency at batch 1 and 32 (short
fp32 timings; .onnx files through onnxruntime). Writes pareto.csv and pareto.png to --out and prints the
models on the front. See docs/distillation-methods.md.

    python pareto.py --real UnetLight=runs/br_unetlight/benchmark_real.json --throughput runs/throughput.json

--real LABEL=FILE (repeatable) with --throughput FILE: IoU on the real chips (the pooled IoU of a
benchmark_real.py leave-one-chip-out run, per band; the threshold beside it) against whole-scene Mpx/s
(benchmark.py --throughput --json; LABEL names the model as its rows do, with its ONNX float and int8 rows);
writes pareto_real.csv and pareto_real.png (lib/bench/pareto_real.py).
"""
import argparse
import sys
from pathlib import Path

from lib.cli import run
from lib.bench.pareto import COSTS, pareto
from lib.errors import DataError

OUTPUT_DIR = "runs/pareto"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, folders of runs, evaluation.json files")
    parser.add_argument("--real", action="append", default=[], metavar="LABEL=FILE",
                        help="a benchmark_real.json and the throughput label of its model (with --throughput)")
    parser.add_argument("--throughput", type=Path, help="benchmark.py --throughput --json output, for --real")
    parser.add_argument("--out", type=Path, default=Path(OUTPUT_DIR), help=f"output folder (default {OUTPUT_DIR})")
    parser.add_argument("--title", default="IoU against cost", help="figure title")
    args = parser.parse_args(argv)
    if args.real or args.throughput:
        return real_main(args)
    if not args.runs:
        raise DataError("give run folders / evaluation.json files, or --real LABEL=FILE with --throughput FILE")
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


def real_main(args):
    """--real / --throughput: pooled real-chip IoU against whole-scene Mpx/s."""
    from lib.bench.pareto_real import parse_real, pareto_real
    if not (args.real and args.throughput):
        raise DataError("--real and --throughput go together: --real LABEL=benchmark_real.json --throughput FILE")
    if not args.throughput.is_file():
        raise DataError(f"--throughput {args.throughput}: not a file")
    points, missing = pareto_real(parse_real(args.real), args.throughput, args.out,
                                  "IoU on the real chips against whole-scene throughput")
    for line in missing:
        print(f"skipped {line}")
    for p in sorted(points, key=lambda p: (p["band"], -p["mpx_s"])):
        print(f"  {p['label']:<36} {p['kind']:<9} IoU {p['iou']:.3f}  {p['mpx_s']:.2f} Mpx/s"
              f"{'  front' if p['front'] else ''}")
    print(f"wrote {args.out / 'pareto_real.csv'} and {args.out / 'pareto_real.png'}")
    return points


if __name__ == "__main__":
    run(lambda: main(sys.argv[1:]))
