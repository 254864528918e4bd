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

Beside them, :func:`tune_malloc` keeps glibc's allocator from handing freed tensor memory
back to the kernel after every step (``MALLOC_DEFAULTS``). With glibc's defaults, a tensor
above its moving mmap threshold is mapped afresh and page-faulted in at each allocation, and
freed memory at the top of the heap is trimmed and faulted back in on the next step: a toy
`train-calibrator` step made about 5,000 page faults (a tenth of its CPU time in the
kernel), `sample` about 10,000 per batch. Only where a variable is not set already (see
``MALLOC_ENV``); the arithmetic is untouched (the same tensors, the same alignment).
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
RECORDED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# mallopt parameters (glibc's malloc.h): M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD.
MALLOC_DEFAULTS = {-1: 256 << 20, -2: 16 << 20, -3: 32 << 20}
"""Freed memory kept up to 256 MiB at the heap's top, the heap grown 16 MiB ahead, blocks
up to 32 MiB (glibc's largest allowed threshold) from the heap rather than mapped one by
one."""
MALLOC_ENV = {-1: "MALLOC_TRIM_THRESHOLD_", -2: "MALLOC_TOP_PAD_", -3: "MALLOC_MMAP_THRESHOLD_"}
"""The environment variables that set the same parameters; one that is set wins."""


def set_thread_defaults() -> None:
    """Apply ``DEFAULTS`` for every variable the environment does not set already, and
    :func:`tune_malloc`."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    tune_malloc()


def tune_malloc() -> bool:
    """Apply ``MALLOC_DEFAULTS`` through glibc's ``mallopt`` (Linux with glibc only; elsewhere,
    or with ``GLIBC_TUNABLES`` setting malloc options, nothing). True when applied."""
    if not sys.platform.startswith("linux") or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: leave them be
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, value in MALLOC_DEFAULTS.items():
        if MALLOC_ENV[param] not in os.environ:
            mallopt(param, value)
    return True


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
