"""Moved to `carcli.runtime.speed`; bench/ (not edited in this change) still imports it here."""

from carcli.runtime.speed import Accelerated, accelerate, notes, settings  # noqa: F401
