"""Training-speed levers (#28), each alone and then together, on the training-step entries.

For every entry (the toy recipe's own refiner step; `refiner_step_dcgan`, `calibrator_step`
and `refiner_step_pixel` as `make bench` builds them) and every round, each setting builds
its networks afresh, takes `--warmup` untimed steps and times `--repeats` steps (median; the
toy step at least 3 of each). The rounds alternate the settings (A B A B), so both rounds
of every setting are in the file.

Lazy R1 (``discriminator.r1_every=k``) is timed as its two kinds of step: one WITH R1 (the
setting without lazy R1, or, for ``all``, the same setting at a step divisible by k) and
one WITHOUT (a step not divisible by k); per step = (with + (k - 1) * without) / k.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python experiments/training_speed/levers.py \\
        --out experiments/training_speed/levers.json

Writes the raw times (seconds per step, per round) and prints a table; the docs table
(docs/results/training_speed.json) is made from this file by `--docs`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import FULL, machine_info, release, synchronize  # noqa: E402

TOY_WARMUP = 3  # untimed and timed steps of the (cheap) toy step: at least this many
K = 4  # lazy R1: every 4th step (StyleGAN2's 16 is for its D updates every step)
LEVERS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "lazy_r1": (f"discriminator.r1_every={K}",),
    "train_bf16": ("speed.train_bf16=true",),
    "channels_last": ("speed.channels_last=true",),
    "foreach_adam": ("speed.optimizer=foreach",),
    "compile": ("speed.compile=true",),
}
# train_bf16 and compile are left out here: on this CPU (AVX512-BF16, no AMX) bf16 made the
# toy step 16x slower (bf16 convolution backward) and compile did not help; the first run's
# toy figures (docs/benchmarks.md, "Training speed") hold them.
ALL = ("lazy_r1", "channels_last", "foreach_adam")
ENTRY_LEVERS = {  # which settings each entry measures (the 60 s pixel step: the main ones)
    "toy_refiner_step": ["baseline", "lazy_r1", "channels_last", "foreach_adam", "all"],
    "refiner_step_dcgan": ["baseline", "lazy_r1", "channels_last", "foreach_adam", "all"],
    "refiner_step_pixel": ["baseline", "lazy_r1", "all"],
    "calibrator_step": ["baseline", "channels_last"],
}


def overrides(lever: str, entry: str) -> tuple[str, ...]:
    if lever != "all":
        return LEVERS[lever]
    names = [n for n in ALL if n != "lazy_r1" or entry != "calibrator_step"]
    return tuple(o for n in names for o in LEVERS[n])


def timed(fn, repeats: int, device) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (all its threads) per
    call: on a machine shared with other jobs the CPU time is the steadier measure of work."""
    walls, cpus = [], []
    for _ in range(repeats):
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def measure(entry: str, lever: str, warmup: int, repeats: int, device) -> dict:
    """Seconds per step of one setting (and, with lazy R1, its steps with and without R1)."""
    from bench.entries import bench_calibrator_step_setup, refiner_step_setup

    extra = overrides(lever, entry)
    lazy = any(o.startswith("discriminator.r1_every") for o in extra)
    t0 = time.perf_counter()
    if entry == "calibrator_step":
        run, _ = bench_calibrator_step_setup(FULL.refiner, device, extra)
        step = lambda i: run()  # noqa: E731
    else:
        d_arch = {"refiner_step_pixel": "pixel", "refiner_step_dcgan": "dcgan"}.get(entry)
        name = "toy" if entry == "toy_refiner_step" else "lidc"
        step, _, _ = refiner_step_setup(d_arch, FULL.refiner, device, extra, name)
    first = time.perf_counter()
    step(1 if lazy else 0)  # the first step (compilation, kernel creation)
    first = time.perf_counter() - first
    for _ in range(warmup - 1):
        step(1 if lazy else 0)
    out = {"first_step_s": first, "build_s": time.perf_counter() - t0 - first}
    if lazy:
        out["without_r1"], out["without_r1_cpu"] = timed(lambda: step(1), repeats, device)
        if lever == "all":
            out["with_r1"], out["with_r1_cpu"] = timed(lambda: step(0), repeats, device)
    else:
        out["s"], out["s_cpu"] = timed(lambda: step(0), repeats, device)
    release()
    return out


def per_step(res: dict, base: dict | None, kind: str = "") -> float | None:
    """Seconds per step (``kind`` "_cpu": CPU seconds); lazy R1 from its steps with and
    without R1 (``base``: the same round's baseline, the step with R1 when the setting did
    not time one itself)."""
    if "s" + kind in res:
        return res["s" + kind]
    with_r1 = res.get("with_r1" + kind, (base or {}).get("s" + kind))
    if with_r1 is None:
        return None
    return (with_r1 + (K - 1) * res["without_r1" + kind]) / K


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "experiments/training_speed/levers.json")
    p.add_argument("--entries", default=",".join(ENTRY_LEVERS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--docs", type=Path, help="write the docs table from --out's file here")
    p.add_argument("--run1", type=Path, help="with --docs: the first run's file (toy rows)")
    args = p.parse_args(argv)
    if args.docs:
        return write_docs(args.out, args.docs, args.run1)
    from carcli.runtime.device import select_device

    device = select_device("cpu")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    data = {
        "command": "OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python "
        "experiments/training_speed/levers.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "machine": machine_info(device, False),
        "k": K,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": {},
    }
    for entry in args.entries.split(","):
        for rnd in range(args.rounds):
            for lever in ENTRY_LEVERS[entry]:
                print(f"{entry} round {rnd + 1} {lever} ...", file=sys.stderr, flush=True)
                warmup = (
                    max(args.warmup, TOY_WARMUP) if entry == "toy_refiner_step" else args.warmup
                )
                repeats = (
                    max(args.repeats, TOY_WARMUP) if entry == "toy_refiner_step" else args.repeats
                )
                res = measure(entry, lever, warmup, repeats, device)
                data["results"].setdefault(entry, {}).setdefault(lever, []).append(res)
                args.out.write_text(json.dumps(data, indent=1) + "\n")  # partial results kept
                print(f"  {res}", file=sys.stderr, flush=True)
    return 0


RUN1_LEVERS = {"train_bf16": "train_bf16", "compile": "compile", "all": "all with train_bf16"}
"""The first run's settings that the second left out (its `all` also held train_bf16)."""


def write_docs(src: Path, dest: Path, run1: Path | None = None) -> int:
    """docs/results/training_speed.json (scripts/docs_tables.py's format) from a run's file
    (and the first run's toy rows that the second left out, marked "run 1")."""
    data = json.loads(src.read_text())
    rows = _rows(data["results"], {})
    first_commit = "-"
    if run1 is not None:
        first = json.loads(run1.read_text())
        rows += _rows(first["results"], RUN1_LEVERS)
        first_commit = first["commit"]
    m = data["machine"]
    out = {
        "command": f"`{data['command']}`, then `--docs docs/results/{dest.name}"
        f"{' --run1 ' + str(run1.name) if run1 else ''}`",
        "commit": data["commit"],
        "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} torch threads, "
        f"torch {m.get('torch')}, AVX512-BF16 (no AMX); shared with other training runs "
        "(load 4-8 on 2 cores): compare within a round",
        "columns": [
            "entry",
            "lever",
            "wall s/step, round 1 / 2",
            "speed-up (wall)",
            "CPU s/step, round 1 / 2",
            "speed-up (CPU)",
            "first step s (compile)",
        ],
        "rows": rows,
        "note": f"Each setting built afresh, {data['warmup']} untimed step(s) (toy: 3), median "
        f"of {data['repeats']} timed (toy: 3); speed-ups against the same round's baseline. "
        f"Lazy R1 (k = {data['k']}) = (step with R1 + {data['k'] - 1} steps without) / k; `all` "
        "= lazy R1, channels-last and foreach Adam together. CPU s = this process's CPU time "
        "(both threads), steadier than wall time on this shared machine. Rows marked (run 1): "
        f"the first run (levers_run1.json, commit {first_commit}, the same step code; its "
        "`all` also held train_bf16; one round only), against its own baseline.",
    }
    dest.write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _rows(results: dict, only: dict[str, str]) -> list[list[str]]:
    """Table rows of a run's results; ``only`` (non-empty): just these settings, renamed and
    marked (run 1)."""
    rows = []
    for entry, levers in results.items():
        bases = levers.get("baseline", [])
        for lever, runs in levers.items():
            if only and lever not in only:
                continue
            row = [f"`{entry}`", f"{only[lever]} (run 1)" if only else lever]
            for kind in ("", "_cpu"):
                secs = [
                    per_step(r, bases[i] if i < len(bases) else None, kind)
                    for i, r in enumerate(runs)
                ]
                ups = [
                    bases[i]["s" + kind] / t if t and i < len(bases) else None
                    for i, t in enumerate(secs)
                ]
                row.append(" / ".join(f"{t:.3f}" if t else "-" for t in secs))
                row.append(" / ".join(f"{u:.2f}x" if u else "-" for u in ups))
            row.append(" / ".join(f"{r['first_step_s']:.1f}" for r in runs))
            rows.append(row)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
