"""Write the demo's deterministic black box: for every synthetic image of a recipe, its most
likely mode as a PNG of class ids named `<split>_<index:06d>.png` (the stems `prepare` looks
for when `data.blackbox_dir` is set on the synthetic source).

    python scripts/blackbox_predictions.py recipes/blackbox_demo.yaml

The images are regenerated from the recipe's seed exactly as `carseg prepare` makes them, so
the predictions line up with the prepared files row by row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image  # Pillow comes with matplotlib

from carcli.data.dataset import SPLITS
from carcli.recipe.load import load_recipe
from carcli.recipe.schema import Recipe
from carcli.stages.prepare import synthetic_split


def most_likely_mode(label: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W]: each image's mode of highest probability (first one on ties)."""
    return label[np.arange(len(label)), np.argmax(weight, axis=1)]


def write_predictions(recipe: Recipe, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for split in SPLITS:
        s = synthetic_split(recipe, split)
        for i, pred in enumerate(most_likely_mode(s.label, s.label_weight)):
            Image.fromarray(pred).save(out_dir / f"{split}_{i:06d}.png")
            count += 1
    return count


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    recipe = load_recipe(argv[0], argv[1:])
    if recipe.data.source != "synthetic" or not recipe.data.blackbox_dir:
        raise SystemExit(f"{argv[0]}: needs data.source synthetic and data.blackbox_dir set")
    n = write_predictions(recipe, Path(recipe.data.blackbox_dir))
    print(f"{n} predictions in {recipe.data.blackbox_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
