"""Requests and answers shared by the sync and async clients, for both transports.

Each operation is written once: its HTTP route, its CLI argv, and how its
JSON answer (the same shape from either) becomes typed data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .errors import HpcHostError, Unavailable, error_from_kind
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec
from ._options import raise_item_error

#: Per-request timeout (s) of calls that are not ``wait`` or ``events``.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Http:
    """One HTTP request to the daemon."""

    method: str
    path: str
    body: Any = None
    timeout: float | None = DEFAULT_TIMEOUT


def job_path(job_id: str, suffix: str = "") -> str:
    """``/v1/jobs/{id}{suffix}`` with the id escaped."""
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def spec_json(
    spec: JobSpec | Mapping[str, Any], idempotency_key: str | None = None
) -> dict[str, Any]:
    """A spec as JSON (a ``JobSpec`` or a mapping of the seed's names), with
    ``idempotency_key`` set when given (it must not differ from the spec's own)."""
    body = spec.to_json() if isinstance(spec, JobSpec) else dict(spec)
    if idempotency_key is not None:
        if body.get("idempotency_key") not in (None, idempotency_key):
            raise ValueError("the spec's idempotency_key and the idempotency_key argument differ")
        body["idempotency_key"] = idempotency_key
    return body


def batch_json(
    specs: Sequence[JobSpec | Mapping[str, Any]],
    idempotency_keys: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """A batch of specs as the JSON array ``submit`` takes, each with its
    key from ``idempotency_keys`` (same length) when given."""
    specs = list(specs)
    if not specs:
        raise ValueError("no specs given")
    keys = [None] * len(specs) if idempotency_keys is None else list(idempotency_keys)
    if len(keys) != len(specs):
        raise ValueError(f"{len(keys)} idempotency keys for {len(specs)} specs")
    return [spec_json(spec, key) for spec, key in zip(specs, keys)]


def submitted(obj: Any, count: int) -> list[str | HpcHostError]:
    """A batch submit's answer: per spec its job id, or its error (not raised)."""
    if not isinstance(obj, list) or len(obj) != count:
        raise HpcHostError(f"unexpected answer to a batch of {count} specs: {obj!r:.200}")
    out: list[str | HpcHostError] = []
    for item in obj:
        job_id = item.get("job_id") if isinstance(item, Mapping) else None
        err = item.get("error") if isinstance(item, Mapping) else None
        if isinstance(job_id, str):
            out.append(job_id)
        elif isinstance(err, Mapping):
            out.append(error_from_kind(str(err.get("kind", "internal")), str(err.get("message", ""))))
        else:
            raise HpcHostError(f"unexpected element of a batch answer: {item!r:.200}")
    return out


def submission_path(idempotency_key: str) -> str:
    """``/v1/submissions/{key}`` with the key escaped."""
    return f"/v1/submissions/{quote(idempotency_key, safe='')}"


def submission_of(obj: Any) -> str | None:
    """``find``'s answer: the job id, ``None`` when no job was made, or
    ``Unavailable`` raised while a submit with the key is still at work."""
    if not isinstance(obj, dict) or "state" not in obj:
        raise HpcHostError(f"unexpected answer to find: {obj!r}")
    if obj["state"] == "in-progress":
        raise Unavailable(
            f"a submit with idempotency key {obj.get('idempotency_key')!r} is still at work"
        )
    job_id = obj.get("job_id")
    return str(job_id) if obj["state"] == "made" and job_id is not None else None


def ids_list(job_ids: str | Sequence[str]) -> list[str]:
    """One id or many, as a list; an empty list is an error."""
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    if not ids:
        raise ValueError("no job ids given")
    return ids


def check_response(r: httpx.Response) -> Any:
    """The JSON of a daemon answer, or the exception its error body names."""
    try:
        body = r.json()
    except json.JSONDecodeError:
        body = None
    if r.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            raise error_from_kind(str(err.get("kind", "internal")), str(err.get("message", "")))
        raise (Unavailable if r.status_code >= 500 else HpcHostError)(
            f"the daemon answered {r.status_code}: {r.text[:200]}"
        )
    return body


def one_status(obj: Any) -> HPCJobInfo:
    """A JobInfo object, or its per-id error raised."""
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, Mapping):
        raise HpcHostError(f"unexpected answer: {obj!r}")
    raise_item_error(obj)
    return HPCJobInfo.from_json(obj)


def many_statuses(obj: Any) -> list[HPCJobInfo | HpcHostError]:
    """An array of JobInfo objects; ids that could not be answered become their error."""
    items = obj if isinstance(obj, list) else [obj]
    out: list[HPCJobInfo | HpcHostError] = []
    for item in items:
        try:
            out.append(one_status(item))
        except HpcHostError as e:
            out.append(e)
    return out


def all_or_raise(results: Sequence[HPCJobInfo | HpcHostError]) -> list[HPCJobInfo]:
    """Every status, or the first per-id error raised."""
    out: list[HPCJobInfo] = []
    for r in results:
        if isinstance(r, HpcHostError):
            raise r
        out.append(r)
    return out


def job_id_of(obj: Any) -> str:
    """The ``job_id`` of a submit answer."""
    if isinstance(obj, Mapping) and isinstance(obj.get("job_id"), str):
        return str(obj["job_id"])
    raise HpcHostError(f"unexpected submit answer: {obj!r}")


def logs_of(obj: Any) -> JobLogs:
    """A logs answer as ``JobLogs``."""
    if not isinstance(obj, Mapping):
        raise HpcHostError(f"unexpected logs answer: {obj!r}")
    return JobLogs(stdout=str(obj.get("stdout", "")), stderr=str(obj.get("stderr", "")))


def event_of(line: str) -> JobEvent | None:
    """One NDJSON line of ``/v1/events``; heartbeats and blank lines are ``None``."""
    line = line.strip()
    if not line:
        return None
    obj = json.loads(line)
    if not isinstance(obj, dict) or "heartbeat" in obj or obj.get("status") is None:
        return None
    return JobEvent.from_json(obj)


class EventFilter:
    """Ends a stream of named jobs once each has been seen final."""

    def __init__(self, job_ids: Sequence[str] | None, stop_when_final: bool) -> None:
        self.open = set(job_ids) if job_ids and stop_when_final else None

    def done_after(self, event: JobEvent) -> bool:
        """Whether the stream can end after ``event``."""
        if self.open is None:
            return False
        if event.info.is_final:
            self.open.discard(event.job_id)
        return not self.open


def changes(
    last: dict[str, HPCJobInfo], results: Sequence[HPCJobInfo | HpcHostError], ids: Sequence[str]
) -> list[JobEvent]:
    """Events for the statuses that changed since ``last`` (the CLI transport polls)."""
    events: list[JobEvent] = []
    for job_id, r in zip(ids, results):
        if isinstance(r, HpcHostError):
            continue
        before = last.get(job_id)
        if before is None or before.status != r.status:
            events.append(
                JobEvent(
                    job_id=job_id,
                    info=r,
                    previous=None if before is None else before.status,
                    backend=r.backend,
                )
            )
            last[job_id] = r
    return events
