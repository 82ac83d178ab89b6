"""Functions test_dask.py runs on Dask workers (which import this module by
name from ``PYTHONPATH``; it imports nothing of the test's)."""

from __future__ import annotations

import os
import sys


def square(x: int) -> int:
    return x * x


def where() -> tuple[str, str, str | None]:
    """What a worker sees: its interpreter, its PATH's first folder, VIRTUAL_ENV."""
    return sys.executable, os.environ["PATH"].split(":")[0], os.environ.get("VIRTUAL_ENV")
