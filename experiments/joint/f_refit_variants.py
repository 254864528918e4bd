"""F's refit on the validation split, richer than the class biases: measured offline.

    python experiments/joint/f_refit_variants.py RUN DATA [RUN DATA ...] [--json OUT]
    python experiments/joint/f_refit_variants.py --docs docs/results/calibrator_scaling.json

RUN's calibrator/model.safetensors is the F a run kept (its class biases already refitted,
`calibrator.recalibrate: class_bias`). On top of it each variant fits, on the validation
split's pixels (`carcli.training.recalibration.validation_pixels`, the pixels the stage's
refit uses), by the same soft cross-entropy:

- ``bias``: the class biases again (a no-op check: the stage already fitted them; this and
  ``vector`` call the stage's own fit, `carcli.training.recalibration.fit_logit_map`);
- ``temperature``: one scale a of F's logits and the class biases, a * l + b (temperature
  scaling with biases; Guo et al. 2017);
- ``vector``: one scale per class and the class biases, a_k * l_k + b_k (vector scaling, ibid.).

Each is then measured on the test split as `evaluate` measures F (experiments/joint/f_offsets.py):
worst class offset over the ambiguous pixels, KL(q || F) on all and on ambiguous pixels, and
the validation cross-entropy after the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import f_offsets
import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.runtime.networks import load_network
from carcli.training.recalibration import fit_logit_map, validation_pixels

REPO = Path(__file__).resolve().parents[2]


def fit(
    logits: torch.Tensor, q: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(a, b, val CE) of one variant: ``bias`` and ``vector`` are the stage's own fit
    (`fit_logit_map`); ``temperature`` one shared scale a = exp(s) with the class biases."""
    if kind != "temperature":
        a, b, _, ce = fit_logit_map(logits, q, scale=kind == "vector")
        return a, b, ce
    logits, q = logits.double(), q.double()
    s = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [b, s],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def loss_of() -> torch.Tensor:
        return -(q * torch.log_softmax(logits * s.exp() + b, dim=1)).sum(1).mean()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return s.exp().detach().float(), (b - b.mean()).detach().float(), float(loss_of())


class Scaled(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.net, self.a, self.b = net, a.view(1, -1, 1, 1), b.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.a + self.b


def variants(run: Path, data: Path) -> list[dict]:
    with DatasetFile(split_path(str(data), "val"), validate=True) as ds:
        f_net = load_network(
            run / "calibrator" / "model.safetensors", "calibrator", "calibrator", ds.info, "-"
        ).eval()
        logits, q = validation_pixels(
            f_net, BatchSource(ds), torch.device("cpu"), 64, np.random.default_rng([0, 17])
        )
    out = []
    for kind in ("bias", "temperature", "vector"):
        a, b, ce = fit(logits, q, kind)
        res = f_offsets.split_offsets(run, data, "test", wrap=lambda n, a=a, b=b: Scaled(n, a, b))
        out.append(
            {
                "run": str(run),
                "variant": kind,
                "scale": [round(float(x), 4) for x in a],
                "val_ce": ce,
                "worst_offset": res["max_calibrator_offset"],
                "kl": res["kl"],
                "kl_ambiguous": res["kl_ambiguous"],
            }
        )
        r = out[-1]
        print(
            f"{run} {kind:12s} scale {r['scale']} val CE {ce:.5f} worst offset "
            f"{r['worst_offset']:.3f} KL {r['kl']:.4f} KL amb {r['kl_ambiguous']:.4f}",
            flush=True,
        )
    return out


ROWS = [  # set | run | data (the toy recipe's Fs as kept: class biases refitted)
    ("C4 (4 raters; val exact)", "runs/r6b/devC4", "data/devC4"),
    ("C4v (4 raters)", "runs/r6b/devC4v", "data/devC4v"),
    ("G4 (4 raters)", "runs/r6b/devG4", "data/devG4"),
    ("A", "runs/devA-now", "data/devA"),
    ("A, seed 1", "runs/devA-now-s1", "data/devA"),
    ("C", "runs/devC-now", "data/devC"),
    ("E", "runs/devE-now", "data/devE"),
    ("F (64x64)", "runs/devF-now", "data/devF"),
    ("G", "runs/devG-now", "data/devG"),
    ("G, seed 1", "runs/devG-now-s1", "data/devG"),
    ("toy", "runs/toy-now", "data/toy"),
    ("unseen (64x64)", "runs/unseen-now", "data/unseen"),
]
NAMES = {"bias": "biases", "temperature": "+ one temperature", "vector": "vector scaling"}


def docs(path: Path) -> None:
    """Every row of ROWS, all three variants: the docs result file at ``path``."""
    sys.path.insert(0, str(REPO / "scripts"))
    from docs_tables import write_result

    rows = []
    for label, run, data in ROWS:
        res = {r["variant"]: r for r in variants(REPO / run, REPO / data)}
        cells = [label, run.removeprefix("runs/")]
        for key, digits in (("worst_offset", 3), ("kl_ambiguous", 4), ("val_ce", 5)):
            cells.append(" / ".join(f"{res[v][key]:.{digits}f}" for v in NAMES))
        cells.append("[" + ", ".join(f"{x:.2f}" for x in res["vector"]["scale"]) + "]")
        rows.append(cells)
    cols = (
        ["set", "F (run)"]
        + [
            f"{what}: {' / '.join(NAMES.values())}"
            for what in ("worst F offset (test)", "KL(q || F), ambiguous test pixels", "val CE")
        ]
        + ["vector scaling's class scales"]
    )
    write_result(
        path,
        "python experiments/joint/f_refit_variants.py --docs docs/results/calibrator_scaling.json",
        "x86_64, 2 CPU cores (shared with 2 training runs), threads=1",
        cols,
        rows,
        note="Each F is the toy recipe's as kept by its cascade (class biases refitted); each "
        "variant is fitted on top of it on the validation split by F's soft cross-entropy "
        "and measured on the test split as evaluate measures F. Bar: worst offset at most 0.03.",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="*", help="RUN DATA RUN DATA ...")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--docs", type=Path, help="every dev set's F: this docs result file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.docs:
        docs(args.docs)
        return
    rows = []
    for run, data in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        rows += variants(Path(run), Path(data))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
