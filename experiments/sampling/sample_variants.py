"""Sampling speed-ups one by one (issue #19): `draw` at the LIDC shapes, variants alternated in
rounds within one run (so a loaded machine affects them alike; compare ratios).

    .venv/bin/python experiments/sampling/sample_variants.py [--rounds 3] [--samples 16 100]
        [--quick]
    .venv/bin/python experiments/sampling/sample_variants.py --agreement runs/devA-base
        # argmax agreement

Variants: ``old`` (the draw before #19: no_grad, G's full forward per chunk, argmax),
``old+ids`` (old with the fast exact class ids), ``default`` (today's draw: + inference_mode),
``nchw`` (weights and activations contiguous instead of channels-last), ``chunk8`` (8 samples
per decoder chunk, encoder once), ``fold`` (BN folded, ``speed.fold_bn``), ``bf16`` (CPU bf16
autocast, ``speed.cpu_bf16``), ``all`` (fold + bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from carcli.data.batches import BatchSource  # noqa: E402
from carcli.data.dataset import Classes, DatasetFile, write_dataset  # noqa: E402
from carcli.models.inference import fold_batchnorm  # noqa: E402
from carcli.models.registry import build_calibrator, build_refiner  # noqa: E402
from carcli.runtime.speed import Accelerated  # noqa: E402
from carcli.sampling.sample import ELEMENT_BUDGET, class_ids, draw, image_noise  # noqa: E402


@torch.no_grad()
def draw_old(F_net, G, source, rows, m, noise_dim, seed, device, ids=False):
    """`draw` as it was before #19 (the baseline column); ``ids``: with the fast class ids."""
    b = source.get(rows, None, annotation=np.zeros(len(rows), dtype=np.int64))
    calib = F_net(b.cond.to(device)).softmax(1)
    noise = torch.stack([image_noise(seed, int(r), m, noise_dim) for r in rows]).to(device)
    step = max(1, ELEMENT_BUDGET // max(1, int(np.prod(calib.shape[1:])) * len(rows)))
    parts = []
    for s0 in range(0, m, step):
        eps = noise[:, s0 : s0 + step]
        y = G(b.image.to(device), calib, num_samples=eps.shape[1], noise=eps)
        parts.append(class_ids(y) if ids else y.argmax(2).to(torch.uint8))
    return torch.cat(parts, 1).cpu().numpy(), calib.float().cpu().numpy().astype(np.float16)


def variants(F_net, G, hw: int, images: int):
    nchw_F = _copy_nchw(F_net)
    nchw_G = _copy_nchw(G)
    fF, fG = fold_batchnorm(F_net), fold_batchnorm(G)

    def bf(net):
        return Accelerated(net, "bf16", False, "cpu")

    chunk8 = 8 * images * G.num_classes * hw * hw
    return {
        "old": lambda src, rows, m: draw_old(F_net, G, src, rows, m, G.noise_dim, 0, CPU),
        "old+ids": lambda src, rows, m: draw_old(
            F_net, G, src, rows, m, G.noise_dim, 0, CPU, ids=True
        ),
        "default": lambda src, rows, m: draw(F_net, G, src, rows, m, G.noise_dim, 0, CPU),
        "nchw": lambda src, rows, m: draw(nchw_F, nchw_G, src, rows, m, G.noise_dim, 0, CPU),
        "chunk8": lambda src, rows, m: draw(
            F_net, G, src, rows, m, G.noise_dim, 0, CPU, chunk_elements=chunk8
        ),
        "fold": lambda src, rows, m: draw(fF, fG, src, rows, m, G.noise_dim, 0, CPU),
        "bf16": lambda src, rows, m: draw(bf(F_net), bf(G), src, rows, m, G.noise_dim, 0, CPU),
        "all": lambda src, rows, m: draw(bf(fF), bf(fG), src, rows, m, G.noise_dim, 0, CPU),
    }


def _copy_nchw(net):
    import copy

    return copy.deepcopy(net).to(memory_format=torch.contiguous_format)


CPU = torch.device("cpu")


def speed(args) -> None:
    import tempfile

    hw, n = (32, 2) if args.quick else (128, 4)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset(
            Path(tmp) / "s.h5",
            image=rng.standard_normal((n, 1, hw, hw)).astype(np.float32),
            label=rng.integers(0, 2, (n, 1, hw, hw), dtype=np.uint8),
            classes=Classes(2),
        )
        with DatasetFile(path) as ds:
            src, rows = BatchSource(ds), np.arange(n)
            torch.manual_seed(0)
            F_net = build_calibrator("segnet", 1, 2).eval()
            table: dict[tuple[str, int, str], list[float]] = {}
            nets = {a: build_refiner(a, 1, 2, 8).eval() for a in args.archs}
            calls = {a: variants(F_net, g, hw, n) for a, g in nets.items()}
            for a in args.archs:  # warm-up
                for fn in calls[a].values():
                    fn(src, rows, 2)
            for r in range(args.rounds):
                for m in args.samples:
                    for a in args.archs:
                        for name, fn in calls[a].items():
                            t0 = time.perf_counter()
                            fn(src, rows, m)
                            table.setdefault((a, m, name), []).append(time.perf_counter() - t0)
                print(f"round {r + 1} done", file=sys.stderr, flush=True)
    names = list(next(iter(calls.values())))
    print(f"samples/s, median of {args.rounds} rounds ({n} images {hw}x{hw}, segnet F)")
    print("| G | M | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for a in args.archs:
        for m in args.samples:
            rates = [n * m / statistics.median(table[(a, m, v)]) for v in names]
            base = rates[0]
            cells = [f"{x:.1f} ({x / base:.2f}x)" for x in rates]
            print(f"| {a} | {m} | " + " | ".join(cells) + " |")


def agreement(run: Path, m: int) -> None:
    from carcli.runtime.networks import load_network

    ds_path = _dataset_of(run)
    with DatasetFile(ds_path) as ds:
        info = ds.info
        F_net = load_network(run / "calibrator" / "model.safetensors", "calibrator",
                             "calibrator", info, "x").eval()  # fmt: skip
        G = load_network(run / "refiner" / "model.safetensors", "refiner", "refiner", info,
                         "x").eval()  # fmt: skip
        src, d = BatchSource(ds), G.noise_dim
        fF, fG = fold_batchnorm(F_net), fold_batchnorm(G)

        def bf(net):
            return Accelerated(net, "bf16", False, "cpu")

        ref, alt = [], {"fold": [], "bf16": [], "all": []}
        for a in range(0, info.n, 16):
            rows = np.arange(a, min(info.n, a + 16))
            ref.append(draw(F_net, G, src, rows, m, d, 0, CPU)[0])
            alt["fold"].append(draw(fF, fG, src, rows, m, d, 0, CPU)[0])
            alt["bf16"].append(draw(bf(F_net), bf(G), src, rows, m, d, 0, CPU)[0])
            alt["all"].append(draw(bf(fF), bf(fG), src, rows, m, d, 0, CPU)[0])
    r = np.concatenate(ref)
    print(f"{run}: {info.n} images x {m} samples, {r[0, 0].size} pixels each, G={G.config['arch']}")
    for k, v in alt.items():
        v = np.concatenate(v)
        same = (v == r).mean()
        whole = (v == r).reshape(len(r), m, -1).all(-1).mean()
        print(f"  {k}: pixel argmax agreement {same:.6f}; samples identical {whole:.4f}")


def _dataset_of(run: Path) -> Path:
    import yaml

    recipe = yaml.safe_load((run / "refiner" / "recipe.yaml").read_text())
    return Path(recipe["data"]["dir"]) / f"{recipe.get('sample', {}).get('split', 'test')}.h5"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, nargs="+", default=[16, 100])
    p.add_argument("--archs", nargs="+", default=["unet", "car"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--agreement", type=Path, help="a trained run folder")
    p.add_argument("--agreement-samples", type=int, default=16)
    args = p.parse_args()
    if args.agreement:
        agreement(args.agreement, args.agreement_samples)
    else:
        speed(args)


if __name__ == "__main__":
    main()
