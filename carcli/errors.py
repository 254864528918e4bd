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


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by `signum` (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A stage stopped by SIGINT / SIGTERM after keeping its work (carcli.runtime.interrupt);
    `message` says how to go on (it may hold `carseg STAGE RECIPE`, which the command line
    fills in). A KeyboardInterrupt (for SIGTERM too), so no `except Exception` on the way up
    swallows it and Python callers of the stage functions see what they saw before."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.message = message

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)
