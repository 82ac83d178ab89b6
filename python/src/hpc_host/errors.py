"""Errors a caller can act on: one exception class per error kind of the host.

The kinds, their CLI exit codes, HTTP statuses and whether a call may
succeed if repeated unchanged are one table shared with the Rust host:
``error_kinds.json`` beside this module (the host's unit tests compare its
own table to that file). The daemon names the kind in its error body
(``{"error": {"kind", "message", "exit_code"}}``); the CLI says it with its
exit code and, where one code stands for several kinds, in its message on
stderr. Both map onto the classes below.

``internal`` (a host bug, or anything the host could not classify) has no
class of its own: it is :class:`HpcHostError` itself, whose ``kind`` is
``internal``, so ``except HpcHostError`` is where it lands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

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


@dataclass(frozen=True)
class Kind:
    """One row of ``error_kinds.json``."""

    kind: str
    exit_code: int
    http_status: int
    retryable: bool


def load_kinds() -> dict[str, Kind]:
    """The host's error kinds, by name, from the table shipped in this package."""
    text = resources.files(__name__.rpartition(".")[0]).joinpath("error_kinds.json").read_text("utf-8")
    rows = json.loads(text)["kinds"]
    return {r["kind"]: Kind(r["kind"], r["exit_code"], r["http_status"], r["retryable"]) for r in rows}


#: The table, read once.
KINDS: dict[str, Kind] = load_kinds()


class HpcHostError(Exception):
    """Base of every error the host reports; ``message`` is the host's own text.

    Raised as itself for the kind ``internal`` (and for a kind this package
    does not know yet, with that ``kind`` and the table's ``retryable``).
    """

    #: The host's name for this kind of error (``invalid-request``, ``not-found``, ...).
    kind: str = "internal"
    #: Whether the same call may succeed later, unchanged (from the table).
    retryable: bool = False

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None and kind != self.kind:
            self.kind = kind
            row = KINDS.get(kind)
            self.retryable = row.retryable if row is not None else False


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


class PluginError(HpcHostError, RuntimeError):
    """The plugin trapped, timed out or could not be loaded."""

    kind = "plugin-error"


class WaitTimeout(HpcHostError, TimeoutError):
    """``wait`` gave up before every job ended; ``jobs`` holds their last status.

    Not a kind of the host's table: the CLI says it with exit code 1, the
    daemon with ``"complete": false``.
    """

    kind = "timeout"
    retryable = True

    def __init__(self, message: str, jobs: Sequence[HPCJobInfo] = ()) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


def _classes_by_kind() -> dict[str, type[HpcHostError]]:
    """Each kind of the table with its class, which takes the table's ``retryable``."""
    classes = [HpcHostError, InvalidRequest, NotFound, Denied, Unavailable, PluginError]
    by_kind = {cls.kind: cls for cls in classes}
    for row in KINDS.values():
        cls = by_kind.get(row.kind)
        if cls is not None:
            cls.retryable = row.retryable
    return by_kind


_BY_KIND = _classes_by_kind()


def class_of(kind: str) -> type[HpcHostError]:
    """The exception class of an error kind (:class:`HpcHostError` for ``internal``
    and for kinds this package has no class for)."""
    return _BY_KIND.get(kind, HpcHostError)


def error_from_kind(kind: str, message: str) -> HpcHostError:
    """The exception for an error kind as the daemon (or the CLI's JSON) names it."""
    return class_of(kind)(message, kind=kind)


def error_from_json(err: Mapping[str, Any]) -> HpcHostError:
    """The exception of an ``{"kind", "message"}`` object of the daemon's or the CLI's JSON."""
    return error_from_kind(str(err.get("kind", "internal")), str(err.get("message", "")))


def error_from_status(status: int, text: str) -> HpcHostError:
    """The exception for an HTTP error answer that carries no error object:
    its kind by the status the table gives it (any other 5xx is unavailable)."""
    kinds = [k.kind for k in KINDS.values() if k.http_status == status]
    kind = kinds[0] if len(kinds) == 1 else "unavailable" if status >= 500 else "internal"
    return error_from_kind(kind, f"the daemon answered {status}: {text[:200]}")


# The CLI prints backend errors as "error: plugin `p`: function: KIND: message"
# (and per id in `status`: "error: ID: KIND: message").
_CLI_KIND = re.compile(": (" + "|".join(re.escape(k) for k in KINDS) + "): ")
_CLI_PLUGIN = re.compile(r"plugin `[^`]*` (failed in|did not answer|could not be loaded)")


def _kinds_of_exit(code: int) -> list[str]:
    return [k.kind for k in KINDS.values() if k.exit_code == code]


def _cli_message(code: int, stderr: str) -> tuple[str, str]:
    """The first error line of a CLI run, and the message: that line without
    ``error:``, with the hint lines that follow it."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    first = errors[0] if errors else (lines[-1] if lines else f"hpc-host exited {code}")
    message = first.removeprefix("error:").strip()
    rest = lines[lines.index(first) + 1 :] if first in lines else []
    return first, "\n".join([message, *rest])


def error_from_cli(code: int, stderr: str) -> HpcHostError:
    """The exception for a failed CLI run, from its exit code and stderr.

    An exit code that stands for one kind in the table is that kind; one
    shared by several (3) is the kind its message names, else a plugin
    failure by its wording, else ``internal``. A code outside the table (a
    crash, a signal) is ``unavailable``.
    """
    first, message = _cli_message(code, stderr)
    kinds = _kinds_of_exit(code)
    if not kinds:
        return Unavailable(f"hpc-host exited {code}: {message}")
    if len(kinds) == 1:
        return error_from_kind(kinds[0], message)
    named = _CLI_KIND.search(first)
    if named and named.group(1) in kinds:
        return error_from_kind(named.group(1), message)
    if "plugin-error" in kinds and _CLI_PLUGIN.search(first):
        return error_from_kind("plugin-error", message)
    return error_from_kind("internal", message)
