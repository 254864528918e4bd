"""plot-reliability: F's reliability diagram, per-class calibration and sample grids.

`reliability` runs the stage, `stats` streams the numbers from the dataset and the bank,
`figures` holds the style, palette and the two calibration figures, `grid` the sample grid.
"""
