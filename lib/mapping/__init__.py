"""Whole-scene mapping, as predict.py runs it: water masks and flood products of scenes of any size.

Imported one way, top to bottom (no module imports one above it, none imports this package's callers):

    batch.py    many scenes: one output set each, summary.csv, failures reported and skipped, --resume-batch,
                scenes shared among torchrun processes; the model's tile checked once for all scenes
    scene.py    one scene, every product: options and inputs checked on a `Scene` opened once (files,
                reader, grid, dtypes, decimated samples, closers), then the products, then the summary
    products.py the products of one scene: pre-event pass, one model pass feeding every sink, COGs,
                polygons, quick-look
    options.py  SceneOptions / SceneOutputs (what predict.py asks for) and the Plan resolved from them once
    sinks.py    what finished rows become: mask, probabilities, uncertainty, flood classes, tallies
    layers.py   the layers of an operational product (observed water, reference / exclusion on the grid,
                likelihood, flags, footprint, flood quick-look), exclusion on every layer, provenance tags
    flags.py    the advisory flag bits; calibration.py: temperature scaling, reliability, ECE
    composite.py  maximum extent over dated flood rasters, date of first flooding (composite.py)
    vector.py   polygons of flood / water with true areas, minimum area, simplification
    flood.py    flood classes against the layers of before; class areas on the ground
    cog.py      Cloud-Optimized GeoTIFFs (tiles, overviews, deflate) from a scratch GeoTIFF
    outputs.py  output paths: checked against the inputs and each other, written under temporary names,
                renamed together when every one is complete
    checks.py   input checks before any work: option ranges, units against the values found, bands read,
                no-data share
    tiling.py   the engine, a function of arrays: tiles, blending, TTA, band fusion, over any reader/sink
    rasters.py  raster readers and writers, input files opened once, rasters on a scene's grid (WarpedVRT),
                the input's units and preprocessing

The synthetic pre/post-event scene pair for trying it: lib/synthetic/flood_pair.py.
"""
