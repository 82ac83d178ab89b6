"""``AsyncClient``: the asyncio client, the same calls as ``Client`` awaited."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from . import _daemon, _ops, _transport
from ._options import Options, Transport, cli_json
from .errors import HpcHostError, Unavailable, WaitTimeout
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec

__all__ = ["AsyncClient"]


class AsyncClient:
    """The asyncio client of hpc-host; see ``Client`` for the arguments.

    Over the daemon's socket, many calls share one connection pool
    (``max_connections``); starting a daemon runs in a worker thread, so the
    event loop never blocks on it. Through the CLI, each call is an
    ``asyncio`` subprocess. Use it from one event loop.
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
        max_connections: int = 100,
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
        self._max_connections = max_connections
        self._lock: asyncio.Lock | None = None
        self._http: httpx.AsyncClient | None = None
        self._sock: str | None = None
        self._use_cli = transport == "cli"

    @property
    def transport(self) -> Transport:
        """``daemon`` or ``cli``: how calls go."""
        return "cli" if self._use_cli else "daemon"

    async def submit(
        self, spec: JobSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Submit a job; returns its id.

        With ``idempotency_key`` (or the spec's), submitting again with the same
        key returns the first job's id instead of making another, whatever
        crashed in between (see docs/cli.md, "Exactly-once submit").
        """
        body = _ops.spec_json(spec, idempotency_key)
        if await self._cli():
            return _ops.job_id_of(await self._run(["submit", "--spec", "-"], json.dumps(body)))
        return _ops.job_id_of(await self._request(_ops.Http("POST", "/v1/jobs", body)))

    async def submit_many(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[str | HpcHostError]:
        """Submit many jobs in one request: see ``Client.submit_many``."""
        body = _ops.batch_json(specs, idempotency_keys)
        if await self._cli():
            out = await self._run(["submit", "--spec", "-"], json.dumps(body), json_on_error=True)
            return _ops.submitted(out, len(body))
        return _ops.submitted(await self._request(_ops.Http("POST", "/v1/jobs", body)), len(body))

    async def status(self, job_id: str) -> HPCJobInfo:
        """The status of one job (raises ``NotFound`` for an unknown id)."""
        if await self._cli():
            return _ops.one_status(await self._run(["status", job_id], json_on_error=True))
        return _ops.one_status(await self._request(_ops.Http("GET", _ops.job_path(job_id))))

    async def statuses(self, job_ids: Sequence[str]) -> list[HPCJobInfo | HpcHostError]:
        """The status of many jobs in one request; failed ids come back as their exception."""
        ids = _ops.ids_list(job_ids)
        if await self._cli():
            return _ops.many_statuses(await self._run(["status", *ids], json_on_error=True))
        req = _ops.Http("POST", "/v1/jobs/status", {"job_ids": ids})
        return _ops.many_statuses(await self._request(req))

    async def wait(
        self, job_ids: str | Sequence[str], timeout: float | None = None
    ) -> list[HPCJobInfo]:
        """Until every job has ended; ``WaitTimeout`` (with ``.jobs``) after ``timeout`` s."""
        ids = _ops.ids_list(job_ids)
        if await self._cli():
            args = ["wait", *ids] + ([] if timeout is None else ["--timeout", str(timeout)])
            return _ops.all_or_raise(_ops.many_statuses(await self._run(args, json_on_error=True)))
        req_timeout = None if timeout is None else timeout + self._opts.timeout
        req = _ops.Http("POST", "/v1/jobs/wait", {"job_ids": ids, "timeout": timeout}, req_timeout)
        ans = await self._request(req)
        jobs = _ops.many_statuses(ans.get("jobs", []) if isinstance(ans, dict) else [])
        if isinstance(ans, dict) and not ans.get("complete", False):
            done = [j for j in jobs if isinstance(j, HPCJobInfo)]
            raise WaitTimeout(f"jobs still running after {timeout} s", done)
        return _ops.all_or_raise(jobs)

    async def cancel(self, job_id: str) -> None:
        """Cancel a job (one that has ended already is not an error)."""
        if await self._cli():
            await self._run(["cancel", job_id])
        else:
            await self._request(_ops.Http("POST", _ops.job_path(job_id, "/cancel")))

    async def find_job(self, idempotency_key: str) -> str | None:
        """The id of the job a submit with ``idempotency_key`` made; ``None``
        when none was made (then submitting with the key makes it). Settles a
        submit that was interrupted; makes no job. Raises ``Unavailable`` while
        a submit with the key is still at work."""
        if await self._cli():
            args = ["find", "--idempotency-key", idempotency_key]
            return _ops.submission_of(await self._run(args, json_on_error=True))
        path = _ops.submission_path(idempotency_key)
        return _ops.submission_of(await self._request(_ops.Http("GET", path)))

    async def logs(self, job_id: str) -> JobLogs:
        """What the job wrote so far, to stdout and to stderr."""
        if await self._cli():
            return _ops.logs_of(await self._run(["logs", job_id]))
        return _ops.logs_of(await self._request(_ops.Http("GET", _ops.job_path(job_id, "/logs"))))

    async def known_jobs(self) -> list[HPCJobInfo]:
        """This backend's jobs the daemon knows; see ``Client.known_jobs``."""
        if await self._cli():
            return []
        ans = await self._request(_ops.Http("GET", "/v1/jobs"))
        return _ops.all_or_raise(_ops.many_statuses(ans))

    async def plugins(self) -> list[dict[str, Any]]:
        """The plugins available (``hpc-host plugins list --output json``)."""
        if await self._cli():
            ans = await self._run(["plugins", "list"])
        else:
            ans = await self._request(_ops.Http("GET", "/v1/plugins"))
        return [dict(p) for p in ans] if isinstance(ans, list) else []

    async def health(self) -> dict[str, Any]:
        """The daemon's ``/v1/health``."""
        if await self._cli():
            return {"status": "ok", "transport": "cli", "binary": self._opts.exe()}
        ans = await self._request(_ops.Http("GET", "/v1/health"))
        return dict(ans) if isinstance(ans, dict) else {}

    async def events(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        stop_when_final: bool = True,
        poll_interval: float = 1.0,
    ) -> AsyncIterator[JobEvent]:
        """Status changes as they happen (see ``Client.events``)."""
        ids = None if job_ids is None else _ops.ids_list(job_ids)
        stop = _ops.EventFilter(ids, stop_when_final)
        if await self._cli():
            if ids is None:
                raise ValueError("events through the CLI need `job_ids`")
            last: dict[str, HPCJobInfo] = {}
            while True:
                for ev in _ops.changes(last, await self.statuses(ids), ids):
                    yield ev
                    if stop.done_after(ev):
                        return
                await asyncio.sleep(poll_interval)
        http = await self._client()
        params = {"job_ids": ",".join(ids)} if ids else {}
        try:
            async with http.stream(
                "GET",
                "/v1/events",
                params=self._params(params),
                timeout=httpx.Timeout(10.0, read=None),
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    _ops.check_response(r)
                async for line in r.aiter_lines():
                    pushed = _ops.event_of(line)
                    if pushed is None:
                        continue
                    yield pushed
                    if stop.done_after(pushed):
                        return
        except httpx.TransportError as e:
            raise Unavailable(f"the event stream broke: {e}") from e

    async def aclose(self) -> None:
        """Close the connections to the daemon (the daemon keeps running)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transports -----------------------------------------------------------

    async def _cli(self) -> bool:
        if not self._use_cli:
            await self._client()
        return self._use_cli

    async def _run(self, args: list[str], stdin: str | None = None, json_on_error: bool = False) -> Any:
        opts = self._opts
        try:
            proc = await asyncio.create_subprocess_exec(
                *opts.cli_command(args),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=opts.process_env(no_daemon=opts.transport == "cli"),
            )
        except OSError as e:
            raise Unavailable(f"cannot run `{opts.exe()}`: {e}") from e
        out, err = await proc.communicate(None if stdin is None else stdin.encode())
        code = proc.returncode if proc.returncode is not None else -1
        return cli_json(code, out.decode(), err.decode(errors="replace"), json_on_error=json_on_error)

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        p = dict(extra or {})
        if self._opts.backend is not None:
            p["backend"] = self._opts.backend
        return p

    async def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._http is not None:
                return self._http
            if self._sock is None:
                self._sock = await asyncio.to_thread(_daemon.socket_path, self._opts)
            sock = self._sock
            if self._opts.autostart:
                h: dict[str, Any] | None = await asyncio.to_thread(
                    _daemon.ensure_daemon, self._opts, sock
                )
            else:
                h = await asyncio.to_thread(_daemon.health, sock)
            if h is None:
                raise Unavailable(
                    f"no hpc-host daemon answers on {sock}\n\n"
                    "hint: start one with `hpc-host serve`, or use autostart=True or transport=\"cli\""
                )
            if not _daemon.matches(self._opts, h):
                warnings.warn(
                    f"the daemon on {sock} serves other settings: calls go through the CLI",
                    stacklevel=3,
                )
                self._use_cli = True
            limits = httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            )
            self._http = httpx.AsyncClient(
                transport=_transport.async_transport(sock, limits),
                base_url=_daemon.BASE_URL,
                timeout=self._opts.timeout,
            )
            return self._http

    async def _request(self, req: _ops.Http) -> Any:
        for attempt in (0, 1):
            http = await self._client()
            try:
                r = await http.request(
                    req.method, req.path, json=req.body, params=self._params(), timeout=req.timeout
                )
            except httpx.ConnectError as e:
                if self._http is http:
                    self._http = None
                if attempt == 0 and self._opts.autostart:
                    continue
                raise Unavailable(f"no hpc-host daemon answers on {self._sock}: {e}") from e
            except httpx.TimeoutException as e:
                raise Unavailable(f"the daemon on {self._sock} did not answer in time: {e}") from e
            except httpx.TransportError as e:
                if self._http is http:
                    self._http = None
                raise Unavailable(f"the daemon on {self._sock} went away mid-call: {e}") from e
            return _ops.check_response(r)
        raise AssertionError("unreachable")
