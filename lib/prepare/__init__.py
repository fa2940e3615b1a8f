"""Public SAR flood datasets, from their release formats to the band-agnostic 02_kfold layout (prepare_data.py).

One module per concern: `rasters` (rasterio reading, label mapping), `sources` (one class per release
format: which files make a chip, how its bands are read), `splits` (patch grid, folds without leakage),
`output` (staging folder, patch files, prepare.json), `report` (what the model will see: data_report.*),
`threshold` (the best single-threshold baseline the report scores), `convert` (the steps in order).
"""
