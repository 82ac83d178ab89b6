"""The host's interfaces behind one object.

Backend logic takes a `Host` and calls its methods; in the component that is
`RealHost` (the generated `wit_world.imports` bindings), under pytest the
`fake.FakeHost`. Host errors are raised as the bindings raise them:
`componentize_py_types.Err(process-error | kv-error)`;
`errors.to_backend_error` maps them.

`print()` output goes nowhere in a plugin: log with `host.log(...)`, which
is `wasi:logging` (the host prints it tagged with the plugin's name).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from componentize_py_types import Ok, Err
from wit_world.imports import kv, process
from wit_world.imports.logging import Level


#: The start time `job-states` answers, as `running(NOT_STARTED)`, for a job
#: accepted but waiting for a free slot (the host runs at most
#: `max_running_jobs` local jobs at once): it has not started yet.
NOT_STARTED = math.inf


def waits_for_slot(state: Any) -> bool:
    """Whether a job's state says it waits for a slot to start."""
    return isinstance(state, process.JobState_Running) and state.value == NOT_STARTED


class Host(Protocol):
    def now(self) -> float: ...
    def setting(self, key: str) -> str | None: ...
    def log(self, level: Level, message: str) -> None: ...
    # ccat:hpc/process (needs `supervise` for jobs, `programs` for run)
    def run(self, req: process.RunRequest) -> process.RunOutput: ...
    def spawn_job(self, req: process.JobRequest) -> None: ...
    def job_states(self, ids: list[str]) -> list[Ok[process.JobState] | Err[process.ProcessError]]: ...
    def kill_job(self, job_id: str) -> bool: ...
    def read_job_log(self, job_id: str, which: process.LogStream, max_bytes: int) -> str: ...
    # ccat:hpc/kv (every plugin has its own prefix)
    def kv_get(self, key: str) -> bytes | None: ...
    def kv_get_many(self, keys: list[str]) -> list[bytes | None]: ...
    def kv_set(self, key: str, value: bytes, ttl_seconds: int | None = None) -> None: ...
    def kv_delete(self, key: str) -> bool: ...
    def kv_list_keys(self, prefix: str) -> list[str]: ...


class RealHost:
    """The host, through the component's imports. Only the interfaces the
    world imports exist: in `backend-process` that is process, kv, config
    and logging."""

    def __init__(self, context: str) -> None:
        self.context = context

    def now(self) -> float:
        return time.time()

    def setting(self, key: str) -> str | None:
        from wit_world.imports import store

        return store.get(key)

    def log(self, level: Level, message: str) -> None:
        from wit_world.imports import logging

        logging.log(level, self.context, message)

    def run(self, req: process.RunRequest) -> process.RunOutput:
        return process.run(req)

    def spawn_job(self, req: process.JobRequest) -> None:
        process.spawn_job(req)

    def job_states(self, ids: list[str]) -> list[Ok[process.JobState] | Err[process.ProcessError]]:
        return process.job_states(ids) if ids else []

    def kill_job(self, job_id: str) -> bool:
        return process.kill_job(job_id)

    def read_job_log(self, job_id: str, which: process.LogStream, max_bytes: int) -> str:
        return process.read_job_log(job_id, which, max_bytes)

    def kv_get(self, key: str) -> bytes | None:
        return kv.get(key)

    def kv_get_many(self, keys: list[str]) -> list[bytes | None]:
        return kv.get_many(keys)

    def kv_set(self, key: str, value: bytes, ttl_seconds: int | None = None) -> None:
        kv.set(key, value, ttl_seconds)

    def kv_delete(self, key: str) -> bool:
        return kv.delete(key)

    def kv_list_keys(self, prefix: str) -> list[str]:
        return kv.list_keys(prefix)
