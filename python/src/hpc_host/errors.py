"""Errors a caller can act on: one exception class per error kind of the host.

The daemon names the kind in its error body (``{"error": {"kind", "message",
"exit_code"}}``); the CLI says it with its exit code (2 bad input, 3 backend
error, 4 denied) and the message on stderr. Both map onto the same classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import HPCJobInfo

__all__ = [
    "HpcHostError",
    "InvalidRequest",
    "NotFound",
    "Denied",
    "Unavailable",
    "PluginError",
    "WaitTimeout",
    "error_from_kind",
    "error_from_cli",
]


class HpcHostError(Exception):
    """Base of every error the host reports; ``message`` is the host's own text."""

    #: The host's name for this kind of error (``invalid-request``, ``not-found``, ...).
    kind: str = "internal"
    #: Whether the same call may succeed later, unchanged.
    retryable: bool = False

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class InvalidRequest(HpcHostError, ValueError):
    """Bad input (a malformed spec, an unknown plugin): retrying unchanged fails again."""

    kind = "invalid-request"


class NotFound(HpcHostError, LookupError):
    """No such job (the backend knows no job by that id)."""

    kind = "not-found"


class Denied(HpcHostError, PermissionError):
    """The plugin's policy refuses what was asked."""

    kind = "denied"


class Unavailable(HpcHostError, ConnectionError):
    """The scheduler, the store or the daemon is down: retry later."""

    kind = "unavailable"
    retryable = True


class PluginError(HpcHostError, RuntimeError):
    """The plugin trapped, timed out or could not be loaded."""

    kind = "plugin-error"


class WaitTimeout(HpcHostError, TimeoutError):
    """``wait`` gave up before every job ended; ``jobs`` holds their last status."""

    kind = "timeout"
    retryable = True

    def __init__(self, message: str, jobs: Sequence[HPCJobInfo] = ()) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


_BY_KIND: dict[str, type[HpcHostError]] = {
    "invalid-request": InvalidRequest,
    "not-found": NotFound,
    "denied": Denied,
    "unavailable": Unavailable,
    "plugin-error": PluginError,
}


def error_from_kind(kind: str, message: str) -> HpcHostError:
    """The exception for an error kind as the daemon (or the CLI's JSON) names it."""
    cls = _BY_KIND.get(kind, HpcHostError)
    return cls(message, kind=kind)


# The CLI prints backend errors as "error: plugin `p`: function: KIND: message"
# (and per id in `status`: "error: ID: KIND: message").
_CLI_KIND = re.compile(r": (invalid-request|not-found|denied|unavailable|internal): ")
_CLI_PLUGIN = re.compile(r"plugin `[^`]*` (failed in|did not answer|could not be loaded)")


def error_from_cli(code: int, stderr: str) -> HpcHostError:
    """The exception for a failed CLI run, from its exit code and stderr."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    first = errors[0] if errors else (lines[-1] if lines else f"hpc-host exited {code}")
    # Keep the hint lines that follow the error.
    message = first.removeprefix("error:").strip()
    rest = lines[lines.index(first) + 1 :] if first in lines else []
    if rest:
        message = "\n".join([message, *rest])
    if code == 2:
        return InvalidRequest(message)
    if code == 4:
        return Denied(message)
    m = _CLI_KIND.search(first)
    if m:
        return error_from_kind(m.group(1), message)
    if _CLI_PLUGIN.search(first):
        return PluginError(message)
    if code < 0 or code > 4:
        return Unavailable(f"hpc-host exited {code}: {message}")
    return HpcHostError(message)
