"""Thread settings carseg chooses before torch or numpy load (they read them only then).

Two defaults, each only when the user has not set the variable:

* ``OMP_WAIT_POLICY=PASSIVE``: OpenMP worker threads sleep instead of spinning when idle.
  Spinning threads fight any other process (a data loader, a second run, CI neighbours) for
  the cores; on 2 shared cores training ran 3-4x slower without it.
* ``OPENBLAS_NUM_THREADS=1``: numpy's BLAS (used by evaluation and plotting, never by
  torch) spins regardless of the wait policy; with one busy neighbour ``evaluate`` took 50 s
  instead of 10 s. Its matrices are small, so one thread loses nothing (10.2 s idle either way).

Set either variable yourself to override (``OMP_WAIT_POLICY=ACTIVE carseg ...``). The
effective values go into every stage's ``manifest.json`` (``threads``).
"""

from __future__ import annotations

import os
from typing import Any

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
RECORDED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_thread_defaults() -> None:
    """Apply ``DEFAULTS`` for every variable the environment does not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def thread_settings() -> dict[str, Any]:
    """The effective settings, for manifests: environment variables and torch's counts."""
    out: dict[str, Any] = {key: os.environ.get(key) for key in RECORDED}
    try:
        import torch

        out["torch_num_threads"] = torch.get_num_threads()
        out["torch_num_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out
