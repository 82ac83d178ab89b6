"""Every operation of the clients, written once and without I/O.

For each operation a function builds an :class:`Op`: the request to the
daemon (:class:`Http`), the CLI run that does the same without one
(:class:`Cli`), and how either answer becomes the typed result or the
exception. ``Client`` and ``AsyncClient`` only carry them out: they send,
run and wait; what is sent and what an answer means is decided here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import quote

import httpx

from .errors import (
    HpcHostError,
    Unavailable,
    WaitTimeout,
    error_from_cli,
    error_from_json,
    error_from_status,
)
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec

T = TypeVar("T")

#: Per-request timeout (s) of calls that are not ``wait`` or ``events``.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Http:
    """One request to the daemon (the client adds its ``backend`` to ``query``)."""

    method: str
    path: str
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)
    #: How long the daemon may hold the request before it answers, on top of
    #: the client's timeout (``wait``'s own timeout); ``None``: no end.
    holds: float | None = 0.0
    #: Whether sending it twice does no harm: a read, a cancel, a submit whose
    #: every spec has an idempotency key. Only such a request is sent again
    #: when its connection breaks before the answer.
    repeatable: bool = True


@dataclass(frozen=True)
class Cli:
    """One ``hpc-host --output json ARGS`` run (the client adds its settings)."""

    args: tuple[str, ...]
    stdin: str | None = None
    #: ``status``/``wait``: a failed run that printed JSON still answers
    #: (per-id errors are inside).
    json_on_error: bool = False


@dataclass(frozen=True)
class CliRun:
    """What a CLI run gave back."""

    code: int
    out: str
    err: str


def _no_run(run: CliRun) -> NoReturn:
    raise AssertionError(f"this operation runs no CLI, yet read {run}")


@dataclass(frozen=True)
class Op(Generic[T]):
    """One operation: each way to ask, and how to read each answer."""

    http: Http
    read_http: Callable[[Any], T]
    #: The CLI run, or (where the CLI has nothing to ask) the answer itself.
    cli: Cli | Callable[[], T]
    read_cli: Callable[[CliRun], T] = _no_run


def _op(http: Http, cli: Cli, read: Callable[[Any], T]) -> Op[T]:
    """An operation whose answer has the same JSON shape from either transport."""
    return Op(http, read, cli, lambda run: read(cli_answer(run, json_on_error=cli.json_on_error)))


# -- the operations -----------------------------------------------------------


def submit(spec: JobSpec | Mapping[str, Any], idempotency_key: str | None) -> Op[str]:
    body = spec_json(spec, idempotency_key)
    http = Http("POST", "/v1/jobs", body, repeatable=body.get("idempotency_key") is not None)
    return _op(http, Cli(("submit", "--spec", "-"), json.dumps(body)), job_id_of)


def submit_many(
    specs: Sequence[JobSpec | Mapping[str, Any]], idempotency_keys: Sequence[str | None] | None
) -> Op[list[str | HpcHostError]]:
    body = batch_json(specs, idempotency_keys)
    keyed = all(s.get("idempotency_key") is not None for s in body)
    cli = Cli(("submit", "--spec", "-"), json.dumps(body), json_on_error=True)
    return _op(Http("POST", "/v1/jobs", body, repeatable=keyed), cli, lambda a: submitted(a, len(body)))


def status(job_id: str) -> Op[HPCJobInfo]:
    return _op(Http("GET", job_path(job_id)), Cli(("status", job_id), json_on_error=True), one_status)


def statuses(job_ids: Sequence[str]) -> Op[list[HPCJobInfo | HpcHostError]]:
    ids = ids_list(job_ids)
    http = Http("POST", "/v1/jobs/status", {"job_ids": ids})
    return _op(http, Cli(("status", *ids), json_on_error=True), many_statuses)


def wait(job_ids: str | Sequence[str], timeout: float | None) -> Op[list[HPCJobInfo]]:
    """Until every job has ended; the daemon answers ``{"jobs", "complete"}``,
    the CLI the jobs, with exit code 1 when the timeout came first."""
    ids = ids_list(job_ids)
    http = Http("POST", "/v1/jobs/wait", {"job_ids": ids, "timeout": timeout}, holds=timeout)
    limit = () if timeout is None else ("--timeout", str(timeout))
    cli = Cli(("wait", *ids, *limit), json_on_error=True)

    def read(answer: Any) -> list[HPCJobInfo]:
        jobs = many_statuses(answer.get("jobs", []) if isinstance(answer, Mapping) else [])
        if isinstance(answer, Mapping) and not answer.get("complete", False):
            raise wait_timeout([j for j in jobs if isinstance(j, HPCJobInfo)], len(ids), timeout)
        return all_or_raise(jobs)

    def read_cli(run: CliRun) -> list[HPCJobInfo]:
        if run.code == 1:
            return read({"jobs": _json_or_none(run.out), "complete": False})
        return read({"jobs": cli_answer(run, json_on_error=True), "complete": True})

    return Op(http, read, cli, read_cli)


def cancel(job_id: str) -> Op[None]:
    # Repeatable: cancelling a job that has ended (or is cancelled) is not an error.
    return _op(Http("POST", job_path(job_id, "/cancel")), Cli(("cancel", job_id)), lambda _: None)


def find_job(idempotency_key: str) -> Op[str | None]:
    path = f"/v1/submissions/{quote(idempotency_key, safe='')}"
    cli = Cli(("find", "--idempotency-key", idempotency_key), json_on_error=True)
    return _op(Http("GET", path), cli, submission_of)


def logs(job_id: str) -> Op[JobLogs]:
    return _op(Http("GET", job_path(job_id, "/logs")), Cli(("logs", job_id)), logs_of)


def known_jobs() -> Op[list[HPCJobInfo]]:
    """Through the CLI there is no daemon to remember jobs: none."""

    def read(answer: Any) -> list[HPCJobInfo]:
        return all_or_raise(many_statuses(answer))

    return Op(Http("GET", "/v1/jobs"), read, lambda: [])


def plugins() -> Op[list[dict[str, Any]]]:
    def read(answer: Any) -> list[dict[str, Any]]:
        return [dict(p) for p in answer] if isinstance(answer, list) else []

    return _op(Http("GET", "/v1/plugins"), Cli(("plugins", "list")), read)


def health(binary: Callable[[], str]) -> Op[dict[str, Any]]:
    """The daemon's health; through the CLI, which binary runs the calls."""

    def read(answer: Any) -> dict[str, Any]:
        return dict(answer) if isinstance(answer, Mapping) else {}

    def without_daemon() -> dict[str, Any]:
        return {"status": "ok", "transport": "cli", "binary": binary()}

    return Op(Http("GET", "/v1/health"), read, without_daemon)


# -- requests -----------------------------------------------------------------


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


def ids_list(job_ids: str | Sequence[str]) -> list[str]:
    """One id or many, as a list; an empty list is an error."""
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    if not ids:
        raise ValueError("no job ids given")
    return ids


# -- answers ------------------------------------------------------------------


def answer(r: httpx.Response) -> Any:
    """The JSON of a daemon answer, or the exception its error body names."""
    try:
        body = r.json()
    except json.JSONDecodeError:
        body = None
    if r.status_code >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            raise error_from_json(err)
        raise error_from_status(r.status_code, r.text)
    return body


def cli_answer(run: CliRun, *, json_on_error: bool = False) -> Any:
    """The JSON a CLI run printed, or the exception its exit code and stderr say.

    With ``json_on_error`` a run that printed JSON returns it even when it
    failed: per-id errors are inside.
    """
    if run.code == 0 or (json_on_error and run.code in (2, 3, 4) and run.out.strip()):
        try:
            return json.loads(run.out) if run.out.strip() else None
        except json.JSONDecodeError as e:
            if run.code == 0:
                raise HpcHostError(f"hpc-host printed no JSON: {run.out[:200]!r}") from e
    raise error_from_cli(run.code, run.err)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def wait_timeout(jobs: Sequence[HPCJobInfo], total: int, timeout: float | None) -> WaitTimeout:
    """``wait``'s timeout, in the CLI's words, with the jobs' last status."""
    still = total - sum(j.is_final for j in jobs)
    return WaitTimeout(f"{still} of {total} jobs still running after {timeout or 0:g} s", jobs)


def job_id_of(obj: Any) -> str:
    """The ``job_id`` of a submit answer."""
    if isinstance(obj, Mapping) and isinstance(obj.get("job_id"), str):
        return str(obj["job_id"])
    raise HpcHostError(f"unexpected submit answer: {obj!r}")


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
            out.append(error_from_json(err))
        else:
            raise HpcHostError(f"unexpected element of a batch answer: {item!r:.200}")
    return out


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


def one_status(obj: Any) -> HPCJobInfo:
    """A JobInfo object, or its per-id error raised."""
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, Mapping):
        raise HpcHostError(f"unexpected answer: {obj!r}")
    err = obj.get("error")
    if obj.get("status") is None and isinstance(err, Mapping):
        raise error_from_json(err)
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


def all_or_raise(results: Sequence[T | HpcHostError]) -> list[T]:
    """Every result (a status, a job id), or the first error among them raised."""
    out: list[T] = []
    for r in results:
        if isinstance(r, HpcHostError):
            raise r
        out.append(r)
    return out


def logs_of(obj: Any) -> JobLogs:
    """A logs answer as ``JobLogs``."""
    if not isinstance(obj, Mapping):
        raise HpcHostError(f"unexpected logs answer: {obj!r}")
    return JobLogs(stdout=str(obj.get("stdout", "")), stderr=str(obj.get("stderr", "")))


# -- events -------------------------------------------------------------------


class EventFeed:
    """The events of one ``events()`` call, from either source: the daemon's
    pushed lines, or (through the CLI) statuses polled again and again.

    ``finished`` turns true once every named job has been seen final (with
    ``stop_when_final``); the caller stops reading then.
    """

    def __init__(self, job_ids: Sequence[str] | None, stop_when_final: bool) -> None:
        self.ids = None if job_ids is None else ids_list(job_ids)
        self._open = set(self.ids) if self.ids and stop_when_final else None
        self._last: dict[str, HPCJobInfo] = {}
        self.finished = False

    def request(self) -> Http:
        """The daemon's stream of these jobs (of every job without ids)."""
        query = {"job_ids": ",".join(self.ids)} if self.ids else {}
        return Http("GET", "/v1/events", query=query, holds=None)

    def ids_to_poll(self) -> list[str]:
        """The ids to poll (through the CLI, which has no stream of every job)."""
        if self.ids is None:
            raise ValueError("events through the CLI need `job_ids`")
        return self.ids

    def pushed(self, line: str) -> list[JobEvent]:
        """The event of one NDJSON line of ``/v1/events`` (none for a heartbeat)."""
        line = line.strip()
        obj = json.loads(line) if line else None
        if not isinstance(obj, dict) or "heartbeat" in obj or obj.get("status") is None:
            return []
        return self._until_finished([JobEvent.from_json(obj)])

    def polled(self, results: Sequence[HPCJobInfo | HpcHostError]) -> list[JobEvent]:
        """Events for the polled statuses that changed since the last poll."""
        events: list[JobEvent] = []
        for job_id, r in zip(self.ids_to_poll(), results):
            before = self._last.get(job_id)
            if isinstance(r, HpcHostError) or (before is not None and before.status == r.status):
                continue
            self._last[job_id] = r
            previous = None if before is None else before.status
            events.append(JobEvent(job_id=job_id, info=r, previous=previous, backend=r.backend))
        return self._until_finished(events)

    def _until_finished(self, events: list[JobEvent]) -> list[JobEvent]:
        """``events`` up to the one after which every named job has ended."""
        for n, event in enumerate(events):
            if self._open is not None and event.info.is_final:
                self._open.discard(event.job_id)
                if not self._open:
                    self.finished = True
                    return events[: n + 1]
        return events
