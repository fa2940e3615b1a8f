"""Flood products from whole-scene inference (lib/mapping/inference.py), as predict.py writes them.

    outputs.py  output paths: checked against the inputs and each other, written under temporary names,
                renamed together when every one is complete
    cog.py      Cloud-Optimized GeoTIFFs (tiles, overviews, deflate) from a scratch GeoTIFF
    checks.py   input checks before any work: units against the values found, bands read, no-data share
    flood.py    other rasters on the scene's grid (pre-event, reference water, exclusion), flood classes,
                class areas on the ground
    vector.py   polygons of flood / water with true areas, minimum area, simplification
    scene.py    one scene: every product of one predict.py run
    batch.py    many scenes: one output set each, summary.csv, failures reported and skipped, --resume-batch,
                scenes shared among torchrun processes
"""
