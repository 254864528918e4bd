"""`carseg` with train-calibrator's optimiser swapped for AdamW (decoupled weight decay,
Loshchilov & Hutter 2019) instead of Adam's coupled L2: an experiment, not a recipe option.

    python experiments/joint/adamw_calibrator.py train-calibrator recipes/toy.yaml \\
        data.dir=data/devC4 data.source=prepared run_dir=runs/x/c4-aw1 \\
        calibrator.weight_decay=0.1 threads=1 --overwrite

calibrator.weight_decay is then AdamW's decay (per step lr x weight_decay x w).
"""

import sys

import torch

import carcli.training.calibrator as calibrator_stage


def adamw(params, lr, betas, weight_decay, impl="default"):
    return torch.optim.AdamW(params, lr=lr, betas=(betas[0], betas[1]), weight_decay=weight_decay)


calibrator_stage.adam = adamw

if __name__ == "__main__":
    from carcli.cli.app import main

    sys.exit(main())
