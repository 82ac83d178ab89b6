"""The component's entry point: componentize-py builds `app` and calls
`HpcBackend`'s methods for the contract's exports. Each delegates to
`backend` with the real host; `guard` turns any exception into the contract's
`backend-error` (a `BackendFailure` as it is, a host error mapped, a bug
`internal`, its traceback logged through `wasi:logging`) rather than a trap.
"""

from __future__ import annotations

import traceback
from typing import Callable, TypeVar

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.logging import Level

import backend
from hpc_plugin.errors import BackendFailure, to_backend_error
from hpc_plugin.host import RealHost

T = TypeVar("T")
HOST = RealHost(backend.NAME)


def guard(call: Callable[[], T]) -> T:
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001 - every failure is an answer
        error = to_backend_error(exc)
        if not isinstance(exc, (BackendFailure, Err)):
            HOST.log(Level.ERROR, "".join(traceback.format_exception(exc)))
        raise Err(error) from None


class HpcBackend(exports.HpcBackend):
    def submit(self, spec):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.submit(HOST, spec))

    def submit_many(self, specs):  # type: ignore[no-untyped-def]
        # Each element carries its own error: nothing to guard.
        return backend.submit_many(HOST, specs)

    def find_job(self, idempotency_key, since):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.find_job(HOST, idempotency_key, since))

    def get_status(self, job_id):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.get_status(HOST, job_id))

    def get_statuses(self, job_ids):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.get_statuses(HOST, job_ids))

    def cancel(self, job_id):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.cancel(HOST, job_id))

    def get_logs(self, job_id):  # type: ignore[no-untyped-def]
        return guard(lambda: backend.get_logs(HOST, job_id))

    def describe(self):  # type: ignore[no-untyped-def]
        return backend.describe()


__all__ = ["HpcBackend", "Ok"]
