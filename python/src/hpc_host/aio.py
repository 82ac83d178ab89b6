"""``AsyncClient``: the asyncio client, the same calls as ``Client`` awaited.

What each call sends and what its answer means is written once, in ``_ops``
and ``_core``; this module only does the awaited I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from . import _daemon, _ops, _transport
from ._core import ClientCore, cannot_run
from .errors import HpcHostError
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(ClientCore):
    """The asyncio client of hpc-host; see ``Client`` for the arguments.

    Over the daemon's socket, many calls share one connection pool
    (``max_connections``); finding or starting a daemon runs in a worker
    thread, so the event loop never blocks on it. Through the CLI, each call
    is an ``asyncio`` subprocess. Use it from one event loop.
    """

    _http: httpx.AsyncClient | None = None
    _looking: asyncio.Lock | None = None

    async def submit(
        self, spec: JobSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Submit a job; returns its id (see ``Client.submit``)."""
        return await self._call(_ops.submit(spec, idempotency_key))

    async def submit_many(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[str | HpcHostError]:
        """Submit many jobs in one request: see ``Client.submit_many``."""
        return await self._call(_ops.submit_many(specs, idempotency_keys))

    async def status(self, job_id: str) -> HPCJobInfo:
        """The status of one job (raises ``NotFound`` for an unknown id)."""
        return await self._call(_ops.status(job_id))

    async def statuses(self, job_ids: Sequence[str]) -> list[HPCJobInfo | HpcHostError]:
        """The status of many jobs in one request; failed ids come back as their exception."""
        return await self._call(_ops.statuses(job_ids))

    async def wait(
        self, job_ids: str | Sequence[str], timeout: float | None = None
    ) -> list[HPCJobInfo]:
        """Until every job has ended; ``WaitTimeout`` (with ``.jobs``) after ``timeout`` s."""
        return await self._call(_ops.wait(job_ids, timeout))

    async def cancel(self, job_id: str) -> None:
        """Cancel a job (one that has ended already is not an error)."""
        await self._call(_ops.cancel(job_id))

    async def find_job(self, idempotency_key: str) -> str | None:
        """The id of the job a submit with ``idempotency_key`` made, or ``None``
        (see ``Client.find_job``)."""
        return await self._call(_ops.find_job(idempotency_key))

    async def logs(self, job_id: str) -> JobLogs:
        """What the job wrote so far, to stdout and to stderr."""
        return await self._call(_ops.logs(job_id))

    async def known_jobs(self) -> list[HPCJobInfo]:
        """This backend's jobs the daemon knows; see ``Client.known_jobs``."""
        return await self._call(_ops.known_jobs())

    async def plugins(self) -> list[dict[str, Any]]:
        """The plugins available (``hpc-host plugins list --output json``)."""
        return await self._call(_ops.plugins())

    async def health(self) -> dict[str, Any]:
        """The daemon's ``/v1/health``."""
        return await self._call(_ops.health(self._opts.exe))

    async def events(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        stop_when_final: bool = True,
        poll_interval: float = 1.0,
    ) -> AsyncIterator[JobEvent]:
        """Status changes as they happen (see ``Client.events``)."""
        feed = _ops.EventFeed(job_ids, stop_when_final)
        if not await self._via_daemon():
            ids = feed.ids_to_poll()
            while not feed.finished:
                for event in feed.polled(await self.statuses(ids)):
                    yield event
                if not feed.finished:
                    await asyncio.sleep(poll_interval)
            return
        try:
            r = await self._http_client().send(self._request(feed.request()), stream=True)
            try:
                if r.is_error:
                    await r.aread()
                    _ops.answer(r)  # raises the error the body names
                async for line in r.aiter_lines():
                    for event in feed.pushed(line):
                        yield event
                    if feed.finished:
                        return
            finally:
                await r.aclose()
        except httpx.TransportError as e:
            raise self._stream_broke(e) from e

    async def aclose(self) -> None:
        """Close the connections to the daemon (the daemon keeps running)."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- I/O ------------------------------------------------------------------

    async def _call(self, op: _ops.Op[T]) -> T:
        """Carry out ``op`` (see ``Client._call``)."""
        attempts = self._attempts(op.http)
        while await self._via_daemon():
            try:
                r = await self._http_client().send(self._request(op.http))
            except httpx.TransportError as e:
                if attempts.failed(e, self._sock):
                    self._forget()
                continue
            return op.read_http(_ops.answer(r))
        if not isinstance(op.cli, _ops.Cli):
            return op.cli()
        return op.read_cli(await self._run(op.cli))

    async def _via_daemon(self) -> bool:
        """Whether calls go to the daemon; looks (and starts one, in a thread) when not known."""
        known = self._known()
        if known is not None:
            return known
        if self._looking is None:
            self._looking = asyncio.Lock()
        async with self._looking:
            known = self._known()
            if known is None:
                found = await asyncio.to_thread(_daemon.discover, self._opts, self._sock)
                known = self._found_daemon(*found)
            return known

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            sock = self._sock
            assert sock is not None, "the socket is known once a daemon was found"
            pools = _transport.async_transport(sock, self._limits())
            self._http = httpx.AsyncClient(transport=pools)
        return self._http

    async def _run(self, cli: _ops.Cli) -> _ops.CliRun:
        argv, env = self._process(cli)
        pipe, none = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=none if cli.stdin is None else pipe, stdout=pipe, stderr=pipe, env=env
            )
        except OSError as e:
            raise cannot_run(argv[0], e) from e
        out, err = await proc.communicate(None if cli.stdin is None else cli.stdin.encode())
        code = -1 if proc.returncode is None else proc.returncode
        return _ops.CliRun(code, out.decode(), err.decode(errors="replace"))
