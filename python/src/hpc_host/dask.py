"""``HpcHostCluster``: a ``dask_jobqueue.JobQueueCluster`` whose workers are hpc-host jobs.

dask-jobqueue's clusters start each worker job with an ``sbatch``/``qsub``
process of their own and stop it with ``scancel``/``qdel``. Here the job is
submitted and cancelled through this user's hpc-host daemon, so any backend
(local, SLURM, Kubernetes, a site's plugin) runs Dask's workers, and Dask's
``scale``, ``adapt`` and ``close`` work as with the other clusters::

    from dask.distributed import Client
    from hpc_host.dask import HpcHostCluster

    cluster = HpcHostCluster(backend="slurm", cores=4, memory="8GiB", walltime="01:00:00")
    cluster.scale(jobs=4)
    client = Client(cluster)

Needs the ``dask`` extra (``pip install 'hpc-host[dask]'``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shlex
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.utils
from dask_jobqueue.core import Job, JobQueueCluster  # type: ignore[import-untyped, unused-ignore]

from ._jobenv import shell_prelude
from .client import Client
from .errors import HpcHostError
from .types import JobSpec

__all__ = ["HpcHostCluster", "HpcHostJob"]

log = logging.getLogger(__name__)

#: dask-jobqueue reads every option's default from ``jobqueue.<config_name>``.
_DEFAULTS: dict[str, Any] = {
    "name": "dask-worker",
    "cores": None,
    "memory": None,
    "processes": None,
    "python": None,
    "interface": None,
    "death-timeout": 60,
    "local-directory": None,
    "shared-temp-directory": None,
    "extra": None,
    "worker-command": "distributed.cli.dask_worker",
    "worker-extra-args": [],
    "shebang": "#!/usr/bin/env bash",
    "walltime": "00:30:00",
    "env-extra": None,
    "job-script-prologue": [],
    "job-extra": None,
    "job-extra-directives": [],
    "job-directives-skip": [],
    "header-skip": None,
    "log-directory": None,
    "scheduler-options": {},
    # hpc-host's own
    "backend": None,
    "carry-interpreter": True,
}
dask.config.update_defaults({"jobqueue": {"hpc-host": _DEFAULTS}})

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$")
_clients: dict[tuple[Any, ...], Client] = {}
_clients_lock = threading.Lock()


def _hours(walltime: str) -> float:
    """``[D-]HH:MM[:SS]`` as hours."""
    m = _WALLTIME.match(str(walltime).strip())
    if not m:
        raise ValueError(f"`walltime` must be `HH:MM:SS` or `D-HH:MM:SS`, not `{walltime}`")
    days, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
    return days * 24 + hh + mm / 60 + ss / 3600


def _extras(job_extra: Mapping[str, Any] | Sequence[str] | None) -> dict[str, str]:
    """``job_extra`` as hpc-host's guarded extra keys: a mapping, or
    ``KEY=VALUE`` / ``--KEY=VALUE`` strings (as sbatch options are written)."""
    if not job_extra:
        return {}
    if isinstance(job_extra, Mapping):
        return {str(k): str(v) for k, v in job_extra.items()}
    out: dict[str, str] = {}
    for item in job_extra:
        key, sep, value = str(item).lstrip("-").partition("=")
        if not sep or not key:
            raise ValueError(f"`job_extra` items are `KEY=VALUE`, not `{item}`")
        out[key] = value
    return out


def _client(key: tuple[Any, ...], kw: dict[str, Any]) -> Client:
    """One client per settings, shared by every job of the process."""
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = _clients[key] = Client(**kw)
        return c


class HpcHostJob(Job):  # type: ignore[misc, unused-ignore]
    """One Dask worker job, submitted and cancelled through hpc-host.

    ``cores`` → ``cpu`` (``job_cpu`` when given, as ``SLURMCluster``'s),
    ``memory`` (or ``job_mem``) → ``memory_gb`` (per job), ``walltime`` →
    ``time_hours``, ``job_extra`` (a mapping or ``KEY=VALUE`` strings) → the
    backend's guarded extra keys (SLURM: ``account``, ``qos``, ``constraint``,
    ...), ``job_script_prologue`` lines run before the worker, ``environment``
    sets variables in the job. ``backend``, ``env``, ``config``, ``socket``,
    ``transport`` and ``environ`` are ``hpc_host.Client``'s.
    """

    config_name = "hpc-host"

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        *,
        backend: str | None = None,
        env: str | None = None,
        config: str | None = None,
        socket: str | None = None,
        transport: str = "daemon",
        environ: Mapping[str, str] | None = None,
        walltime: str | None = None,
        job_extra: Mapping[str, Any] | Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        carry_interpreter: bool | None = None,
        job_cpu: int | None = None,
        job_mem: str | None = None,
        config_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        cfg = f"jobqueue.{self.config_name}"
        if walltime is None:
            walltime = dask.config.get(f"{cfg}.walltime")
        if backend is None:
            backend = dask.config.get(f"{cfg}.backend", None)
        if carry_interpreter is None:
            carry_interpreter = bool(dask.config.get(f"{cfg}.carry-interpreter", True))
        self.walltime = walltime
        self.time_hours = None if walltime is None else _hours(walltime)
        self.extras = _extras(job_extra)
        self.environment = dict(environment or {})
        self.carry_interpreter = carry_interpreter
        self.backend = backend
        self.job_cpu = job_cpu
        self.job_mem = None if job_mem is None else dask.utils.parse_bytes(job_mem)
        env_items = tuple(sorted((environ or {}).items()))
        self._client_key = (backend, env, config, socket, transport, env_items)
        self._client_kw: dict[str, Any] = dict(
            backend=backend, env=env, config=config, socket=socket, transport=transport,
            environ=dict(environ or {}),
        )
        # No scheduler directives: the job spec carries the resources.
        self.job_header = ""

    @property
    def client(self) -> Client:
        return _client(self._client_key, self._client_kw)

    def spec(self) -> JobSpec:
        """The hpc-host job spec of this worker."""
        script = "\n".join(filter(None, self._job_script_prologue or []))
        script = f"{script}\nexec {self._command_template}\n" if script else f"exec {self._command_template}\n"
        if self.carry_interpreter:
            script = shell_prelude() + script
        res: dict[str, Any] = dict(self.extras)
        res["cpu"] = int(self.job_cpu or self.worker_cores)
        memory = self.job_mem or self.worker_memory
        if memory:
            # dask's bytes; SLURM's --mem takes whole MiB, rounded up.
            res["memory_gb"] = math.ceil(memory / 2**20) / 1024
        if self.time_hours is not None:
            res["time_hours"] = self.time_hours
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.job_name}-{self.name}")[:64]
        return JobSpec(
            execution_command=["/bin/bash", "-c", script],
            job_name=name,
            resource_requirements=res,
            environment_variables=self.environment,
        )

    def job_script(self) -> str:
        """What the job runs (``cluster.job_script()`` shows it, as dask-jobqueue's do)."""
        cmd = self.spec().execution_command
        return cmd if isinstance(cmd, str) else shlex.join(cmd)

    async def start(self) -> None:
        """Submit the worker's job (no ``sbatch`` of our own: the daemon does it)."""
        spec = self.spec()
        try:
            self.job_id = await asyncio.to_thread(self.client.submit, spec)
        except HpcHostError as e:
            raise RuntimeError(f"hpc-host refused the worker job: {e.message}") from e
        log.debug("worker %s is hpc-host job %s", self.name, self.job_id)
        # ProcessInterface.start: mark the worker running.
        await super(Job, self).start()  # type: ignore[no-untyped-call, unused-ignore]

    async def close(self) -> None:
        """Cancel the worker's job (a job that ended already is not an error)."""
        if self.job_id:
            try:
                await asyncio.to_thread(self.client.cancel, self.job_id)
            except HpcHostError as e:
                log.warning("cancelling worker job %s failed: %s", self.job_id, e)
        await super(Job, self).close()  # type: ignore[no-untyped-call, unused-ignore]


class HpcHostCluster(JobQueueCluster):  # type: ignore[misc, unused-ignore]
    """A Dask cluster whose workers are hpc-host jobs (see ``HpcHostJob`` for the options)."""

    job_cls = HpcHostJob
