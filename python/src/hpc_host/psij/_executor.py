"""``HpcHostExecutor``: PSI/J's ``JobExecutor`` named ``hpc-host``.

``psij.JobExecutor.get_instance("hpc-host", url="hpc-host://slurm?env=production")``
runs PSI/J jobs through this user's hpc-host daemon: the URL's host part names
the backend (none: the daemon's default), its query the settings
(``env``, ``config``, ``socket``, ``transport``, ``autostart``). Status changes come
from the daemon's event stream, through one thread per process (``_watch``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from psij import (
    InvalidJobException,
    Job,
    JobExecutor,
    JobExecutorConfig,
    JobState,
    JobStatus,
    SubmitException,
)

from ..client import Client
from ..errors import HpcHostError, InvalidRequest, NotFound
from ..types import HPCJobInfo
from ._spec import queue_of, to_hpc_spec
from ._watch import Watcher, watcher_for

__all__ = ["HpcHostExecutor", "HpcHostExecutorConfig", "QUEUE_SETTINGS"]

#: The setting that names a backend's queue, per backend: hpc-host takes the
#: SLURM partition from its settings, not from the job spec, so a job with a
#: ``queue_name`` is submitted with that setting overridden for it.
#: Backends not listed have no queues and ignore ``queue_name`` (as PSI/J's
#: ``local`` executor does).
QUEUE_SETTINGS: Mapping[str, str] = {"slurm": "SLURM_PARTITION"}

_URL_KEYS = {"env", "config", "socket", "transport", "autostart"}


class HpcHostExecutorConfig(JobExecutorConfig):
    """Settings of the ``hpc-host`` executor beyond its URL.

    ``environ`` adds variables for the CLI and for a daemon the client starts
    (e.g. ``CCAT_WORKFLOW_MANAGER_*`` overrides); the other fields are the
    URL's query keys, which win when both are given. ``carry_interpreter``
    (default on) puts this interpreter's ``bin`` folder in front of each job's
    ``PATH`` and sets ``VIRTUAL_ENV``, unless the job's ``environment`` sets
    them (PSI/J's own executors let jobs inherit the submitter's environment;
    hpc-host gives them a minimal one).
    """

    def __init__(
        self,
        *,
        env: str | None = None,
        config: str | os.PathLike[str] | None = None,
        socket: str | os.PathLike[str] | None = None,
        transport: str = "daemon",
        autostart: bool = True,
        environ: Mapping[str, str] | None = None,
        launcher_log_file: Path | None = None,
        work_directory: Path | None = None,
        carry_interpreter: bool = True,
    ) -> None:
        super().__init__(launcher_log_file=launcher_log_file, work_directory=work_directory)
        self.carry_interpreter = carry_interpreter
        self.env = env
        self.config = None if config is None else os.fspath(config)
        self.socket = None if socket is None else os.fspath(socket)
        self.transport = transport
        self.autostart = autostart
        self.environ = dict(environ or {})


@dataclass(frozen=True)
class _Target:
    """What one executor talks to: backend and client settings (hashable: the watcher key)."""

    backend: str | None
    env: str | None
    config: str | None
    socket: str | None
    transport: str
    autostart: bool
    environ: tuple[tuple[str, str], ...] = field(default=())

    def client(self, extra: Mapping[str, str] | None = None, transport: str | None = None) -> Client:
        environ = dict(self.environ)
        environ.update(extra or {})
        return Client(
            backend=self.backend,
            env=self.env,
            config=self.config,
            socket=self.socket,
            transport="cli" if (transport or self.transport) == "cli" else "daemon",
            autostart=self.autostart,
            environ=environ,
        )


def _target(url: str | None, cfg: JobExecutorConfig | None) -> _Target:
    """The backend and settings from the URL and the config."""
    c = cfg if isinstance(cfg, HpcHostExecutorConfig) else HpcHostExecutorConfig()
    values: dict[str, Any] = {
        "env": c.env,
        "config": c.config,
        "socket": c.socket,
        "transport": c.transport,
        "autostart": c.autostart,
    }
    backend = None
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("hpc-host", ""):
            raise ValueError(f"the `hpc-host` executor takes `hpc-host://BACKEND` URLs, not `{url}`")
        backend = parts.netloc or None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _URL_KEYS:
                raise ValueError(
                    f"unknown `{key}` in the executor URL `{url}`\n\n"
                    f"hint: the URL takes {', '.join(f'`{k}`' for k in sorted(_URL_KEYS))}"
                )
            values[key] = value
    if values["transport"] not in ("daemon", "cli"):
        raise ValueError(f"`transport` must be `daemon` or `cli`, not `{values['transport']}`")
    auto = values["autostart"]
    if isinstance(auto, str):
        auto = auto.lower() not in ("0", "false", "no")
    return _Target(
        backend=backend,
        env=values["env"] or None,
        config=values["config"] or None,
        socket=values["socket"] or None,
        transport=values["transport"],
        autostart=bool(auto),
        environ=tuple(sorted(c.environ.items())),
    )


def psij_status(info: HPCJobInfo, cancel_asked: bool) -> JobStatus:
    """PSI/J's status for an hpc-host status.

    A job whose backend says ``CANCELLED`` (SLURM, the local backend) or that
    this executor was asked to cancel and then failed is ``CANCELED``.
    """
    when = info.observed_at or time.time()
    meta: dict[str, object] | None = (
        {"native_state": info.native_state} if info.native_state else None
    )
    if info.status == "pending":
        return JobStatus(JobState.QUEUED, time=when, metadata=meta)
    if info.status == "running":
        return JobStatus(JobState.ACTIVE, time=when, metadata=meta)
    if info.status == "completed":
        return JobStatus(JobState.COMPLETED, time=when, exit_code=info.exit_code or 0, metadata=meta)
    native = (info.native_state or "").upper()
    if native.startswith("CANCEL") or (cancel_asked and native in ("", "KILLED")):
        return JobStatus(JobState.CANCELED, time=when, message=info.reason, metadata=meta)
    return JobStatus(
        JobState.FAILED, time=when, exit_code=info.exit_code, message=info.reason, metadata=meta
    )


class HpcHostExecutor(JobExecutor):
    """Runs PSI/J jobs through hpc-host (see the module doc for the URL)."""

    def __init__(self, url: str | None = None, config: JobExecutorConfig | None = None) -> None:
        super().__init__(url=url, config=config or HpcHostExecutorConfig())
        self._carry = getattr(config, "carry_interpreter", True)
        self._target = _target(url, config)
        self._client = self._target.client()
        self._cancel_asked: set[str] = set()
        self._lock = threading.Lock()

    @property
    def watcher(self) -> Watcher:
        """The process's event stream for this executor's backend and settings."""
        return watcher_for(self._target, self._target.client, self._target.backend)

    # -- PSI/J's JobExecutor -----------------------------------------------------

    def submit(self, job: Job) -> None:
        """Submit ``job``; its native id is hpc-host's job id."""
        spec = self._check_job(job)
        hspec = to_hpc_spec(spec, self._target.backend, self._carry)
        watcher = self.watcher
        watcher.ready()
        client = self._client
        queue = queue_of(spec)
        setting = QUEUE_SETTINGS.get(self._target.backend or "")
        if queue and setting:
            # One CLI run with the queue's setting: the daemon serves one settings set.
            client = self._target.client({f"CCAT_WORKFLOW_MANAGER_{setting}": queue}, "cli")
        try:
            # PSI/J ids are UUIDs: a retried submit of this job makes no second one.
            native_id = client.submit(hspec, idempotency_key=f"psij-{job.id}")
        except InvalidRequest as e:
            job.executor = None
            raise InvalidJobException(e.message, e) from e
        except HpcHostError as e:
            job.executor = None
            raise SubmitException(e.message, e) from e
        job._native_id = native_id
        self._set_job_status(job, JobStatus(JobState.QUEUED, time=time.time()))
        self._follow(job, native_id, watcher)

    def cancel(self, job: Job) -> None:
        """Ask the backend to cancel ``job``; it turns ``CANCELED`` when the backend says so."""
        if job.native_id is None:
            raise SubmitException("the job has not been submitted")
        if job.status.final:
            return
        with self._lock:
            self._cancel_asked.add(job.native_id)
        try:
            self._client.cancel(job.native_id)
        except HpcHostError as e:
            raise SubmitException(e.message, e) from e

    def list(self) -> list[str]:  # noqa: A003 (PSI/J's name)
        """Ids of this backend's jobs that hpc-host knows.

        The daemon's (every job submitted through it, or asked about, by any
        client since it started: ``GET /v1/jobs``), and those this process
        submitted or attached or saw on the daemon's event stream. The
        scheduler's other jobs (submitted without hpc-host) are not listed.
        """
        ids = set(self.watcher.known_ids())
        try:
            ids.update(i.job_id for i in self._client.known_jobs() if i.job_id is not None)
        except HpcHostError:
            pass  # the daemon is away: what this process knows
        return sorted(ids)

    def attach(self, job: Job, native_id: str) -> None:
        """Follow the job with hpc-host id ``native_id`` (submitted anywhere)."""
        if job.status.state != JobState.NEW:
            raise InvalidJobException("the job must be in the NEW state to attach it")
        job.executor = self
        job._native_id = native_id
        watcher = self.watcher
        watcher.ready()
        try:
            info = self._client.status(native_id)
        except NotFound as e:
            job.executor = None
            raise InvalidJobException(e.message, e) from e
        except HpcHostError as e:
            job.executor = None
            raise SubmitException(e.message, e) from e
        self._follow(job, native_id, watcher, info)

    # -- status from the watcher ---------------------------------------------------

    def _follow(
        self, job: Job, native_id: str, watcher: Watcher, first: HPCJobInfo | None = None
    ) -> None:
        def changed(info: HPCJobInfo) -> None:
            if job.status.final:
                return
            with self._lock:
                asked = native_id in self._cancel_asked
            status = psij_status(info, asked)
            self._set_job_status(job, status)
            if status.final:
                watcher.unwatch(native_id, changed)
                with self._lock:
                    self._cancel_asked.discard(native_id)

        seen = watcher.watch(native_id, changed)
        if seen is not None:
            changed(seen)
        if first is None and not job.status.final and self._client.transport == "daemon":
            # The daemon answers from memory: no scheduler query for this
            # (through the CLI, the watcher's next batched poll brings it).
            try:
                first = self._client.status(native_id)
            except HpcHostError:
                pass
        if first is not None:
            # Through the watcher, so that `list()` remembers the job.
            watcher.deliver(first)
