"""``Client``: the synchronous client, over the daemon's socket or through the CLI."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from . import _daemon, _ops, _transport
from ._options import Options, Transport, cli_json, run_cli
from .errors import HpcHostError, Unavailable, WaitTimeout
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec

__all__ = ["Client"]


class Client:
    """A client of hpc-host: submit, status, wait, cancel, logs, events, plugins.

    By default it talks to this user's daemon over its Unix socket and starts
    one (detached, under a lock) when none answers; ``autostart=False`` makes
    that an ``Unavailable`` error instead. ``transport="cli"`` runs every call
    as one ``hpc-host --output json ...`` process and needs no daemon.

    ``config``, ``env`` and ``backend`` are the CLI's ``--config``, ``--env``
    and ``--backend``; ``environ`` adds variables (e.g. ``CCAT_WORKFLOW_MANAGER_*``
    overrides) to the environment of the CLI and of a daemon it starts.
    ``binary`` names the ``hpc-host`` to run (default: ``$HPC_HOST_BIN``, the
    one installed with this package, then ``PATH``); ``socket`` the daemon's
    socket (default: what the CLI computes from the settings).

    A ``Client`` is safe to share between threads. Use one per process
    (create it after ``fork``).
    """

    def __init__(
        self,
        *,
        config: str | os.PathLike[str] | None = None,
        env: str | None = None,
        backend: str | None = None,
        transport: Transport = "daemon",
        autostart: bool = True,
        socket: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = _ops.DEFAULT_TIMEOUT,
        start_timeout: float = 30.0,
    ) -> None:
        if transport not in ("daemon", "cli"):
            raise ValueError(f"transport must be `daemon` or `cli`, not {transport!r}")
        self._opts = Options(
            binary=None if binary is None else os.fspath(binary),
            config=None if config is None else os.fspath(config),
            env=env,
            backend=backend,
            environ=environ,
            socket=None if socket is None else os.fspath(socket),
            autostart=autostart,
            transport=transport,
            timeout=timeout,
            start_timeout=start_timeout,
        )
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._sock: str | None = None
        self._use_cli = transport == "cli"

    # -- the public operations ------------------------------------------------

    @property
    def transport(self) -> Transport:
        """``daemon`` or ``cli``: how calls go (``cli`` also after a settings mismatch)."""
        return "cli" if self._use_cli else "daemon"

    @property
    def socket(self) -> str:
        """The daemon's socket path (computed on first use)."""
        if self._sock is None:
            self._sock = _daemon.socket_path(self._opts)
        return self._sock

    def submit(
        self, spec: JobSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Submit a job; returns its id.

        With ``idempotency_key`` (or the spec's), submitting again with the same
        key returns the first job's id instead of making another, whatever
        crashed in between (see docs/cli.md, "Exactly-once submit").
        """
        body = _ops.spec_json(spec, idempotency_key)
        if self._cli():
            import json

            return _ops.job_id_of(self._run(["submit", "--spec", "-"], stdin=json.dumps(body)))
        return _ops.job_id_of(self._request(_ops.Http("POST", "/v1/jobs", body)))

    def submit_many(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[str | HpcHostError]:
        """Submit many jobs in one request; per spec, in order, its job id, or
        its error (not raised: the other specs are still submitted).

        A backend makes specs of one shape with one scheduler request where it
        can (SLURM: one job array); each job still has its own id, status,
        logs and cancel. Each spec may carry its own idempotency key (or take
        it from ``idempotency_keys``); a batch sent again makes no job twice.
        """
        body = _ops.batch_json(specs, idempotency_keys)
        if self._cli():
            import json

            out = self._run(["submit", "--spec", "-"], stdin=json.dumps(body), json_on_error=True)
            return _ops.submitted(out, len(body))
        return _ops.submitted(self._request(_ops.Http("POST", "/v1/jobs", body)), len(body))

    def status(self, job_id: str) -> HPCJobInfo:
        """The status of one job (raises ``NotFound`` for an id the backend does not know)."""
        if self._cli():
            return _ops.one_status(self._run(["status", job_id], json_on_error=True))
        return _ops.one_status(self._request(_ops.Http("GET", _ops.job_path(job_id))))

    def statuses(self, job_ids: Sequence[str]) -> list[HPCJobInfo | HpcHostError]:
        """The status of many jobs in one request, in the order asked.

        An id that could not be answered comes back as its exception (not raised).
        """
        ids = _ops.ids_list(job_ids)
        if self._cli():
            return _ops.many_statuses(self._run(["status", *ids], json_on_error=True))
        body = {"job_ids": ids}
        return _ops.many_statuses(self._request(_ops.Http("POST", "/v1/jobs/status", body)))

    def wait(self, job_ids: str | Sequence[str], timeout: float | None = None) -> list[HPCJobInfo]:
        """Block until every job has ended; returns their final status.

        Raises ``WaitTimeout`` (with ``.jobs``) when ``timeout`` seconds pass
        first, and a job's error when one could not be answered.
        """
        ids = _ops.ids_list(job_ids)
        if self._cli():
            args = ["wait", *ids] + ([] if timeout is None else ["--timeout", str(timeout)])
            return _ops.all_or_raise(_ops.many_statuses(self._run(args, json_on_error=True)))
        body = {"job_ids": ids, "timeout": timeout}
        req_timeout = None if timeout is None else timeout + self._opts.timeout
        ans = self._request(_ops.Http("POST", "/v1/jobs/wait", body, timeout=req_timeout))
        jobs = _ops.many_statuses(ans.get("jobs", []) if isinstance(ans, dict) else [])
        if isinstance(ans, dict) and not ans.get("complete", False):
            done = [j for j in jobs if isinstance(j, HPCJobInfo)]
            raise WaitTimeout(
                f"{sum(not j.is_final for j in done)} of {len(ids)} jobs still running "
                f"after {timeout} s",
                done,
            )
        return _ops.all_or_raise(jobs)

    def cancel(self, job_id: str) -> None:
        """Cancel a job (a job that has ended already is not an error)."""
        if self._cli():
            self._run(["cancel", job_id])
        else:
            self._request(_ops.Http("POST", _ops.job_path(job_id, "/cancel")))

    def find_job(self, idempotency_key: str) -> str | None:
        """The id of the job a submit with ``idempotency_key`` made; ``None``
        when none was made (then submitting with the key makes it). Settles a
        submit that was interrupted; makes no job. Raises ``Unavailable`` while
        a submit with the key is still at work."""
        if self._cli():
            args = ["find", "--idempotency-key", idempotency_key]
            return _ops.submission_of(self._run(args, json_on_error=True))
        path = _ops.submission_path(idempotency_key)
        return _ops.submission_of(self._request(_ops.Http("GET", path)))

    def logs(self, job_id: str) -> JobLogs:
        """What the job wrote so far, to stdout and to stderr."""
        if self._cli():
            return _ops.logs_of(self._run(["logs", job_id]))
        return _ops.logs_of(self._request(_ops.Http("GET", _ops.job_path(job_id, "/logs"))))

    def known_jobs(self) -> list[HPCJobInfo]:
        """This backend's jobs the daemon knows (submitted through it, or asked
        about, by any client since it started), as last observed, by id.
        Through the CLI there is no daemon to remember them: none."""
        if self._cli():
            return []
        return _ops.all_or_raise(_ops.many_statuses(self._request(_ops.Http("GET", "/v1/jobs"))))

    def plugins(self) -> list[dict[str, Any]]:
        """The plugins available (``hpc-host plugins list --output json``)."""
        ans = (
            self._run(["plugins", "list"])
            if self._cli()
            else self._request(_ops.Http("GET", "/v1/plugins"))
        )
        return [dict(p) for p in ans] if isinstance(ans, list) else []

    def health(self) -> dict[str, Any]:
        """The daemon's ``/v1/health`` (its version, pid, socket and settings)."""
        if self._cli():
            return {"status": "ok", "transport": "cli", "binary": self._opts.exe()}
        ans = self._request(_ops.Http("GET", "/v1/health"))
        return dict(ans) if isinstance(ans, dict) else {}

    def events(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        stop_when_final: bool = True,
        poll_interval: float = 1.0,
    ) -> Iterator[JobEvent]:
        """Status changes as they happen: first each named job's current state,
        then every change, in order.

        With ``job_ids`` and ``stop_when_final``, the iterator ends once every
        named job has ended; without ``job_ids`` it follows every job the daemon
        tracks until closed. Through the CLI (``transport="cli"``) it polls
        ``status`` every ``poll_interval`` seconds and needs ``job_ids``.
        """
        ids = None if job_ids is None else _ops.ids_list(job_ids)
        stop = _ops.EventFilter(ids, stop_when_final)
        if self._cli():
            if ids is None:
                raise ValueError("events through the CLI need `job_ids`")
            last: dict[str, HPCJobInfo] = {}
            while True:
                for ev in _ops.changes(last, self.statuses(ids), ids):
                    yield ev
                    if stop.done_after(ev):
                        return
                time.sleep(poll_interval)
        params = {"job_ids": ",".join(ids)} if ids else {}
        http = self._client()
        try:
            with http.stream(
                "GET", "/v1/events", params=self._params(params), timeout=httpx.Timeout(10.0, read=None)
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    _ops.check_response(r)
                for line in r.iter_lines():
                    pushed = _ops.event_of(line)
                    if pushed is None:
                        continue
                    yield pushed
                    if stop.done_after(pushed):
                        return
        except httpx.TransportError as e:
            raise Unavailable(f"the event stream from {self.socket} broke: {e}") from e

    def close(self) -> None:
        """Close the connection to the daemon (the daemon keeps running)."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transports -----------------------------------------------------------

    def _cli(self) -> bool:
        if not self._use_cli:
            self._client()
        return self._use_cli

    def _run(self, args: list[str], stdin: str | None = None, json_on_error: bool = False) -> Any:
        code, out, err = run_cli(self._opts, args, stdin)
        return cli_json(code, out, err, json_on_error=json_on_error)

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        p = dict(extra or {})
        if self._opts.backend is not None:
            p["backend"] = self._opts.backend
        return p

    def _client(self, *, start: bool = True) -> httpx.Client:
        """The HTTP client on the socket, connecting (and starting a daemon) on first use."""
        with self._lock:
            if self._http is not None:
                return self._http
            sock = self.socket
            h: dict[str, Any] | None
            if start and self._opts.autostart:
                h = _daemon.ensure_daemon(self._opts, sock)
            else:
                h = _daemon.health(sock)
                if h is None:
                    raise Unavailable(
                        f"no hpc-host daemon answers on {sock}\n\n"
                        "hint: start one with `hpc-host serve`, or use autostart=True "
                        "or transport=\"cli\""
                    )
            if not _daemon.matches(self._opts, h):
                warnings.warn(
                    f"the daemon on {sock} serves {h.get('settings_file')} [{h.get('env')}], "
                    "not this client's settings: calls go through the CLI",
                    stacklevel=3,
                )
                self._use_cli = True
            self._http = httpx.Client(
                transport=_transport.transport(sock),
                base_url=_daemon.BASE_URL,
                timeout=self._opts.timeout,
            )
            return self._http

    def _drop(self, http: httpx.Client) -> None:
        """Forget a connection pool whose daemon is gone (not closed: other
        threads may be using it, and get their own error)."""
        with self._lock:
            if self._http is http:
                self._http = None

    def _request(self, req: _ops.Http) -> Any:
        """Send one request; a daemon that is gone is started again once
        (before the request was sent), and ``Unavailable`` otherwise."""
        for attempt in (0, 1):
            http = self._client()
            try:
                r = http.request(
                    req.method, req.path, json=req.body, params=self._params(), timeout=req.timeout
                )
            except httpx.ConnectError as e:
                # Nothing was sent: safe to start a daemon and send again.
                self._drop(http)
                if attempt == 0 and self._opts.autostart:
                    continue
                raise Unavailable(f"no hpc-host daemon answers on {self.socket}: {e}") from e
            except httpx.TimeoutException as e:
                raise Unavailable(f"the daemon on {self.socket} did not answer in time: {e}") from e
            except httpx.TransportError as e:
                self._drop(http)
                raise Unavailable(f"the daemon on {self.socket} went away mid-call: {e}") from e
            return _ops.check_response(r)
        raise AssertionError("unreachable")
