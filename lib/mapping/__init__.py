"""Whole-scene mapping, as predict.py runs it: water masks and flood products of scenes of any size.

Imported one way, top to bottom (no module imports one above it, none imports this package's callers):

    batch.py    many scenes: one output set each, summary.csv, failures reported and skipped, --resume-batch,
                scenes shared among torchrun processes; the model's tile checked once for all scenes
    resume.py   what --resume-batch may keep (the settings a scene's summary records against those asked
                for) and the scratch files a killed batch left
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
    tiling.py   the engine, a function of arrays: tiles, blending, TTA, band fusion, over any reader/sink
    rasters.py  raster readers and writers, input files opened once, rasters on a scene's grid (WarpedVRT),
                the input's units and preprocessing
    pages.py    a multi-page TIFF (one band per page) read as one raster of those bands
    checks.py   input checks before any work: option ranges, units against the values found and each band's
                range, bands read, no-data share, folders and complex rasters
    grids.py    rasters combined by georeference only: band files on one grid, layers reprojected or refused,
                coverage of the scene

The synthetic pre/post-event scene pair for trying it: lib/synthetic/flood_pair.py.
"""
