"""carseg: calibrated adversarial refinement for stochastic semantic segmentation."""

from __future__ import annotations

from typing import Any

from carcli._version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    """`from carcli import load_model` imports the API (and torch) only when asked."""
    if name == "load_model":
        from carcli.api import load_model

        return load_model
    raise AttributeError(f"module 'carcli' has no attribute {name!r}")
