"""F's refit on the validation split, richer than the class biases: measured offline.

    python experiments/joint/f_refit_variants.py RUN DATA [RUN DATA ...] [--json OUT]

RUN's calibrator/model.safetensors is the F a run kept (its class biases already refitted,
`calibrator.recalibrate: class_bias`). On top of it each variant fits, on the validation
split's pixels (`carcli.training.recalibration.validation_pixels`, the pixels the stage's
refit uses), by the same soft cross-entropy:

- ``bias``: the class biases again (a no-op check: the stage already fitted them);
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
from pathlib import Path

import f_offsets
import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.runtime.networks import load_network
from carcli.training.recalibration import validation_pixels


def fit(
    logits: torch.Tensor, q: torch.Tensor, scale: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(a, b, val CE) minimising mean -sum_k q_k log softmax(a * l + b)_k; a = exp(s)."""
    logits, q = logits.double(), q.double()
    k = logits.shape[1]
    s = torch.zeros(
        k if scale == "vector" else 1, dtype=torch.float64, requires_grad=scale != "bias"
    )
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    params = [b] + ([s] if scale != "bias" else [])
    opt = torch.optim.LBFGS(
        params,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="RUN DATA RUN DATA ...")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run, data in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        rows += variants(Path(run), Path(data))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
