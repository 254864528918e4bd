"""The one error type the command line turns into a one-line message and exit status 1."""

from __future__ import annotations


class CarsegError(Exception):
    """A failure the user can fix: bad recipe, missing or corrupt input.

    ``hint`` says what to do next (e.g. the command that makes a missing input).
    """

    exit_status = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} — {self.hint}"


class UsageError(CarsegError):
    """A command line that cannot be carried out as written (a malformed option value, an
    override without `=`, a --fail-if metric that the run will not have): exit status 2."""

    exit_status = 2
