"""Errors: `BackendFailure` carries a contract `backend-error`; the host's
`process` and `kv` errors map onto it as the Rust SDK maps them."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world.imports import kv, process
from wit_world.imports.ccat_hpc_types_0_1_0 import (
    BackendError,
    BackendError_Denied,
    BackendError_Internal,
    BackendError_InvalidRequest,
    BackendError_NotFound,
    BackendError_Unavailable,
)


class BackendFailure(Exception):
    """An error the caller can act on. `guard` turns it into the WIT `Err`."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(f"{type(error).__name__}: {error.value}")
        self.error = error


def invalid_request(message: str) -> BackendFailure:
    return BackendFailure(BackendError_InvalidRequest(message))


def not_found(message: str) -> BackendFailure:
    return BackendFailure(BackendError_NotFound(message))


def denied(message: str) -> BackendFailure:
    return BackendFailure(BackendError_Denied(message))


def unavailable(message: str) -> BackendFailure:
    return BackendFailure(BackendError_Unavailable(message))


def internal(message: str) -> BackendFailure:
    return BackendFailure(BackendError_Internal(message))


def from_process(e: object) -> BackendError:
    """A `process-error` as a `backend-error` (as the Rust SDK's `From`)."""
    if isinstance(e, process.ProcessError_Denied):
        return BackendError_Denied(e.value)
    if isinstance(e, process.ProcessError_NotFound):
        return BackendError_NotFound(e.value)
    if isinstance(e, process.ProcessError_TimedOut):
        return BackendError_Unavailable(e.value)
    if isinstance(e, process.ProcessError_Invalid):
        return BackendError_InvalidRequest(e.value)
    if isinstance(e, process.ProcessError_Failed):
        return BackendError_Internal(e.value)
    raise TypeError(f"not a process error: {e!r}")


def from_kv(e: object) -> BackendError:
    """A `kv-error` as a `backend-error` (as the Rust SDK's `From`)."""
    if isinstance(e, kv.KvError_Unavailable):
        return BackendError_Unavailable(f"job store: {e.value}")
    if isinstance(e, kv.KvError_Denied):
        return BackendError_Denied(e.value)
    if isinstance(e, kv.KvError_Invalid):
        return BackendError_InvalidRequest(e.value)
    if isinstance(e, kv.KvError_Other):
        return BackendError_Internal(f"job store: {e.value}")
    raise TypeError(f"not a kv error: {e!r}")


_PROCESS = (
    process.ProcessError_Denied,
    process.ProcessError_NotFound,
    process.ProcessError_TimedOut,
    process.ProcessError_Invalid,
    process.ProcessError_Failed,
)
_KV = (kv.KvError_Unavailable, kv.KvError_Denied, kv.KvError_Invalid, kv.KvError_Other)


def to_backend_error(exc: BaseException) -> BackendError:
    """Any exception as a `backend-error`: a `BackendFailure` as it is, a
    host error (`Err(process-error)` / `Err(kv-error)`) mapped, anything
    else `internal` with its type and message."""
    if isinstance(exc, BackendFailure):
        return exc.error
    if isinstance(exc, Err):
        if isinstance(exc.value, _PROCESS):
            return from_process(exc.value)
        if isinstance(exc.value, _KV):
            return from_kv(exc.value)
    return BackendError_Internal(f"{type(exc).__name__}: {exc}")
