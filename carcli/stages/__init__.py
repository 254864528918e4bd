"""The stages: one module per `carseg` command that reads a recipe (`run_<stage>`).

Each reads the recipe and calls library functions with plain arguments. The library packages
(`data`, `models`, `losses`, `metrics`, `plots`, `sampling`) never see a recipe.
"""
