"""Checks on a job spec and resource conversions, as the Rust SDK's
`spec` and `resources` modules do them."""

from __future__ import annotations

import math

from .errors import invalid_request

#: Longest time limit accepted: a century.
MAX_HOURS = 100.0 * 366.0 * 24.0


def check_no_nul(what: str, value: str) -> None:
    if "\0" in value:
        raise invalid_request(
            f"{what} contains a NUL character, which no program argument or environment value can carry"
        )


def check_command(argv: list[str], field: str = "execution_command") -> None:
    if not argv:
        raise invalid_request(f"`{field}` is empty")
    if argv[0] == "":
        raise invalid_request(f"`{field}` starts with an empty program name")
    for i, word in enumerate(argv):
        check_no_nul(f"`{field}` element {i}", word)


def hours_to_seconds(hours: float, field: str = "resource_requirements.time_hours") -> int:
    """Whole seconds, rounded up (without float noise); at least 1."""
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise invalid_request(f"`{field}` must be a positive number, not `{hours}`")
    if hours > MAX_HOURS:
        raise invalid_request(f"`{field}` is too large: `{hours}`")
    exact = hours * 3600.0
    nearest = round(exact)
    seconds = nearest if abs(exact - nearest) < 1e-6 else math.ceil(exact)
    return max(int(seconds), 1)
