"""The Parsl apps of ``test_parsl``, in a module with no import-time side
effects: HTEX workers unpickle apps by reference to their module."""

from __future__ import annotations

import parsl


@parsl.python_app
def square(x: int) -> int:
    """Runs in a worker of the block."""
    import os

    return x * x + int(os.environ.get("PARSL_TEST_ZERO", "0"))


@parsl.bash_app
def greet(name: str, stdout: str | None = None) -> str:
    """A bash app whose stdout Parsl redirects to ``stdout``."""
    return f"echo hello {name}"
