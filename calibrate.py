"""Calibration of a checkpoint's water probability on labelled scenes: reliability diagram, expected
calibration error (ECE), and the temperature for predict.py --likelihood (temperature scaling).

    python calibrate.py runs/pspmixer/best.pt chip_vv.tif:chip_label.tif other_vv.tif:other_label.tif \
        --band VV --out runs/pspmixer/calibration
    python predict.py runs/pspmixer/best.pt scene.tif water.tif --likelihood likelihood.tif --temperature 1.7

Each SCENE:LABEL pair is mapped whole as predict.py maps it (tiled, blended; the label read on the scene's
grid, nearest; label values other than 0 and 1 are no-data). The temperature is fitted on every labelled
pixel (negative log-likelihood); with three or more scenes it is also judged leave-one-scene-out (fitted
on the others, scored on the one left out), the honest figure. Writes OUT/calibration.json (temperature,
ECE and reliability bins before and after, per scene and pooled) and OUT/reliability.png. See
lib/mapping/calibration.py and docs/flood-mapping.md#likelihood.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from lib.errors import InferenceError
from lib.mapping.calibration import calibrate, fit_temperature, reliability, reliability_plot


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("pairs", nargs="+", metavar="SCENE:LABEL", help="a scene raster and its label raster")
    parser.add_argument("--band", default=None, help="band name of the scenes (default the checkpoint's first)")
    parser.add_argument("--raster-band", type=int, default=1, help="band of the scene files to read (1-based)")
    parser.add_argument("--out", type=Path, required=True, help="folder for calibration.json and reliability.png")
    return parser.parse_args(argv)


def scene_pixels(model, data: dict, scene: Path, label: Path, band: str | None, raster_band: int):
    """(probability, label) of the scene's labelled, valid pixels, as predict.py maps the scene."""
    from lib.mapping.rasters import open_aligned, open_input
    from lib.mapping.scene import SceneOptions, SceneOutputs, map_scene
    with tempfile.TemporaryDirectory() as folder:
        outputs = SceneOutputs(mask=Path(folder) / "mask.tif", probability=Path(folder) / "p.npy")
        options = SceneOptions(bands=[band] if band else None, raster_bands=[raster_band], progress=False)
        map_scene(model, data, [scene], outputs, options, note=lambda m: None)
        probability = np.load(outputs.probability)
    grid = open_input(scene, raster_band)
    try:
        truth = open_aligned(label, grid.grid, 1, "nearest")
        values = truth.reader.read(0, grid.grid["height"])
        truth.close()
    finally:
        grid.close()
    labelled = np.isin(values, (0, 1)) & np.isfinite(probability)
    return probability[labelled], values[labelled].astype(np.uint8)


def leave_one_out(scenes: list[tuple]) -> dict:
    """ECE of each scene with the temperature fitted on the others, pooled over the scenes."""
    probabilities, labels, temperatures = [], [], []
    for index, (p, y) in enumerate(scenes):
        others = [s for i, s in enumerate(scenes) if i != index]
        t = fit_temperature(np.concatenate([s[0] for s in others]), np.concatenate([s[1] for s in others]))
        temperatures.append(t)
        probabilities.append(calibrate(p, t))
        labels.append(y)
    return {"temperatures": temperatures,
            "pooled": reliability(np.concatenate(probabilities), np.concatenate(labels))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from lib.bench.onnx_model import load_model_any
    model, checkpoint = load_model_any(args.checkpoint, "cpu")
    pairs = [tuple(Path(part) for part in text.rsplit(":", 1)) for text in args.pairs]
    if any(len(pair) != 2 for pair in pairs):
        raise InferenceError("give each scene and its label as SCENE:LABEL")
    scenes = [scene_pixels(model, checkpoint["data"], s, l, args.band, args.raster_band) for s, l in pairs]
    p, y = np.concatenate([s[0] for s in scenes]), np.concatenate([s[1] for s in scenes])
    temperature = fit_temperature(p, y)
    report = {"checkpoint": str(args.checkpoint), "temperature": temperature, "pixels": int(len(p)),
              "before": reliability(p, y), "after": reliability(calibrate(p, temperature), y),
              "scenes": {str(s): {"pixels": int(len(sp)), "ece_before": reliability(sp, sy)["ece"],
                                  "ece_after": reliability(calibrate(sp, temperature), sy)["ece"]}
                         for (s, _), (sp, sy) in zip(pairs, scenes)}}
    if not 0.051 < temperature < 19.9:
        print(f"warning: the temperature {temperature:.3g} is at the end of the searched range [0.05, 20]: the "
              f"model's probability barely follows the labels (a near-constant output); no temperature fixes that",
              file=sys.stderr)
    if len(scenes) >= 3:
        report["leave_one_scene_out"] = leave_one_out(scenes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    curves = {"model": report["before"], f"T = {temperature:.2f}": report["after"]}
    if "leave_one_scene_out" in report:
        curves["T left out"] = report["leave_one_scene_out"]["pooled"]
    reliability_plot(curves, args.out / "reliability.png")
    print(f"{len(p):,} labelled px of {len(pairs)} scenes: ECE {report['before']['ece']:.4f} -> "
          f"{report['after']['ece']:.4f} with T = {temperature:.3f}"
          + (f" (leave one scene out: {report['leave_one_scene_out']['pooled']['ece']:.4f})"
             if "leave_one_scene_out" in report else "") + f"; wrote {args.out / 'calibration.json'}")
    return report


if __name__ == "__main__":
    from lib.cli import run
    run(lambda: main(sys.argv[1:]))
