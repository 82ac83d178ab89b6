"""``Client``: the synchronous client, over the daemon's socket or through the CLI.

What each call sends and what its answer means is written once, in ``_ops``
and ``_core``; this module only does the blocking I/O.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from . import _daemon, _ops, _transport
from ._core import ClientCore, cannot_run
from .errors import HpcHostError
from .types import HPCJobInfo, JobEvent, JobLogs, JobSpec

__all__ = ["Client"]

T = TypeVar("T")


class Client(ClientCore):
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
    socket (default: what the CLI computes from the settings). ``timeout`` is
    each call's (``wait`` adds its own), ``start_timeout`` how long a daemon
    it starts may take to answer, ``max_connections`` how many connections
    each thread may open to the daemon at once.

    A daemon that serves other settings is not used: calls go through the
    CLI (a warning says so), until a daemon starts anew on the socket.

    A ``Client`` is safe to share between threads (each has its own
    connections). Use one per process (create it after ``fork``).
    """

    _http: httpx.Client | None = None

    @property
    def socket(self) -> str:
        """The daemon's socket path (computed on first use)."""
        if self._sock is None:
            self._sock = _daemon.socket_path(self._opts)
        return self._sock

    # -- the public operations ------------------------------------------------

    def submit(
        self, spec: JobSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Submit a job; returns its id.

        With ``idempotency_key`` (or the spec's), submitting again with the same
        key returns the first job's id instead of making another, whatever
        crashed in between (see docs/cli.md, "Exactly-once submit").
        """
        return self._call(_ops.submit(spec, idempotency_key))

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
        return self._call(_ops.submit_many(specs, idempotency_keys))

    def status(self, job_id: str) -> HPCJobInfo:
        """The status of one job (raises ``NotFound`` for an id the backend does not know)."""
        return self._call(_ops.status(job_id))

    def statuses(self, job_ids: Sequence[str]) -> list[HPCJobInfo | HpcHostError]:
        """The status of many jobs in one request, in the order asked.

        An id that could not be answered comes back as its exception (not raised).
        """
        return self._call(_ops.statuses(job_ids))

    def wait(self, job_ids: str | Sequence[str], timeout: float | None = None) -> list[HPCJobInfo]:
        """Block until every job has ended; returns their final status.

        Raises ``WaitTimeout`` (with ``.jobs``) when ``timeout`` seconds pass
        first, and a job's error when one could not be answered.
        """
        return self._call(_ops.wait(job_ids, timeout))

    def cancel(self, job_id: str) -> None:
        """Cancel a job (a job that has ended already is not an error)."""
        self._call(_ops.cancel(job_id))

    def find_job(self, idempotency_key: str) -> str | None:
        """The id of the job a submit with ``idempotency_key`` made; ``None``
        when none was made (then submitting with the key makes it). Settles a
        submit that was interrupted; makes no job. Raises ``Unavailable`` while
        a submit with the key is still at work."""
        return self._call(_ops.find_job(idempotency_key))

    def logs(self, job_id: str) -> JobLogs:
        """What the job wrote so far, to stdout and to stderr."""
        return self._call(_ops.logs(job_id))

    def known_jobs(self) -> list[HPCJobInfo]:
        """This backend's jobs the daemon knows (submitted through it, or asked
        about, by any client since it started), as last observed, by id.
        Through the CLI there is no daemon to remember them: none."""
        return self._call(_ops.known_jobs())

    def plugins(self) -> list[dict[str, Any]]:
        """The plugins available (``hpc-host plugins list --output json``)."""
        return self._call(_ops.plugins())

    def health(self) -> dict[str, Any]:
        """The daemon's ``/v1/health`` (its version, pid, socket and settings)."""
        return self._call(_ops.health(self._opts.exe))

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
        feed = _ops.EventFeed(job_ids, stop_when_final)
        if not self._via_daemon():
            ids = feed.ids_to_poll()
            while True:
                yield from feed.polled(self.statuses(ids))
                if feed.finished:
                    return
                time.sleep(poll_interval)
        try:
            r = self._http_client().send(self._request(feed.request()), stream=True)
            try:
                if r.is_error:
                    r.read()
                    _ops.answer(r)  # raises the error the body names
                for line in r.iter_lines():
                    yield from feed.pushed(line)
                    if feed.finished:
                        return
            finally:
                r.close()
        except httpx.TransportError as e:
            raise self._stream_broke(e) from e

    def close(self) -> None:
        """Close the connections to the daemon (the daemon keeps running)."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O ------------------------------------------------------------------

    def _call(self, op: _ops.Op[T]) -> T:
        """Carry out ``op`` through the daemon, or through the CLI when there
        is none this client may use."""
        attempts = self._attempts(op.http)
        while self._via_daemon():
            try:
                return op.read_http(_ops.answer(self._http_client().send(self._request(op.http))))
            except httpx.TransportError as e:
                if attempts.failed(e, self._sock):
                    self._forget()
        if not isinstance(op.cli, _ops.Cli):
            return op.cli()
        return op.read_cli(self._run(op.cli))

    def _via_daemon(self) -> bool:
        """Whether calls go to the daemon; looks (and starts one) when not known."""
        known = self._known()
        if known is not None:
            return known
        with self._lock:
            known = self._known()
            if known is None:
                known = self._found_daemon(*_daemon.discover(self._opts, self._sock))
            return known

    def _http_client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                pools = _transport.ThreadPools(self.socket, self._limits())
                self._http = httpx.Client(transport=pools)
            return self._http

    def _run(self, cli: _ops.Cli) -> _ops.CliRun:
        argv, env = self._process(cli)
        try:
            p = subprocess.run(
                argv, input=cli.stdin, capture_output=True, text=True, env=env, check=False
            )
        except OSError as e:
            raise cannot_run(argv[0], e) from e
        return _ops.CliRun(p.returncode, p.stdout, p.stderr)
