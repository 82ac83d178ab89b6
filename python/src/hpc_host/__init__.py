"""hpc-host from Python: a drop-in ``HPCBackend`` and sync/async clients.

``pip install hpc-host`` puts the ``hpc-host`` binary on ``PATH`` and this
module in the environment::

    from hpc_host import HpcHostBackend

    backend = HpcHostBackend()                 # settings.toml / ENV_FOR_DYNACONF, as the CLI
    job_id = backend.submit(["python", "reduce.py"], None, None, None, None, None, None,
                            {"cpu": 4}, {}, "reduce")
    info = backend.get_status(job_id)          # HPCJobInfo(status="running", ...)

Calls go to this user's daemon (``hpc-host serve``) over its Unix socket; the
first client starts one when none answers. ``transport="cli"`` runs each call
through the CLI instead.
"""

from __future__ import annotations

from ._binary import find_binary
from .aio import AsyncClient
from .backend import HpcHostBackend
from .client import Client
from .errors import (
    Denied,
    HpcHostError,
    InvalidRequest,
    NotFound,
    PluginError,
    Unavailable,
    WaitTimeout,
)
from .types import FINAL, HPCJobInfo, JobEvent, JobLogs, JobSpec, JobStatus

__all__ = [
    "AsyncClient",
    "Client",
    "Denied",
    "FINAL",
    "HPCJobInfo",
    "HpcHostBackend",
    "HpcHostError",
    "InvalidRequest",
    "JobEvent",
    "JobLogs",
    "JobSpec",
    "JobStatus",
    "NotFound",
    "PluginError",
    "Unavailable",
    "WaitTimeout",
    "find_binary",
]
