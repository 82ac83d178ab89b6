"""``HpcHostProvider``: a Parsl ``ExecutionProvider`` that starts blocks through hpc-host.

Parsl's providers each run a scheduler command per call (``sbatch``, ``squeue``,
``scancel``). This one asks this user's hpc-host daemon instead, so every
``status`` call of every Parsl process costs the scheduler nothing beyond the
daemon's one poll per interval, and any hpc-host backend (local, SLURM,
Kubernetes, a site's plugin) runs Parsl's blocks::

    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from hpc_host.parsl import HpcHostProvider

    config = Config(executors=[HighThroughputExecutor(
        provider=HpcHostProvider("slurm", walltime="01:00:00", cores_per_node=4))])

Needs the ``parsl`` extra (``pip install 'hpc-host[parsl]'``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from parsl.jobs.states import JobState, JobStatus
from parsl.launchers import SingleNodeLauncher
from parsl.launchers.base import Launcher
from parsl.providers.base import ExecutionProvider
from parsl.providers.errors import SubmitException
from parsl.utils import RepresentationMixin

from ._jobenv import shell_prelude
from ._options import Transport
from .client import Client
from .errors import HpcHostError
from .types import HPCJobInfo, JobSpec

__all__ = ["HpcHostProvider", "parsl_status"]

log = logging.getLogger(__name__)

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")


def _hours(walltime: str) -> float:
    """``[D-]HH:MM:SS`` as hours."""
    m = _WALLTIME.match(walltime.strip())
    if not m:
        raise ValueError(f"`walltime` must be `HH:MM:SS` or `D-HH:MM:SS`, not `{walltime}`")
    days, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
    return days * 24 + hh + mm / 60 + ss / 3600


def parsl_status(info: HPCJobInfo) -> JobStatus:
    """Parsl's ``JobStatus`` for an hpc-host status (``TIMEOUT`` and ``CANCELLED`` kept apart)."""
    if info.status == "pending":
        return JobStatus(JobState.PENDING)
    if info.status == "running":
        return JobStatus(JobState.RUNNING)
    if info.status == "completed":
        return JobStatus(JobState.COMPLETED, exit_code=info.exit_code or 0)
    native = (info.native_state or "").upper()
    if native.startswith("CANCEL"):
        return JobStatus(JobState.CANCELLED, message=info.reason)
    if native == "TIMEOUT":
        return JobStatus(JobState.TIMEOUT, message=info.reason, exit_code=info.exit_code)
    return JobStatus(JobState.FAILED, message=info.reason, exit_code=info.exit_code)


class HpcHostProvider(ExecutionProvider, RepresentationMixin):
    """Parsl blocks as hpc-host jobs.

    ``backend`` names the hpc-host backend (default: the daemon's);
    ``env``/``config``/``socket``/``transport``/``autostart``/``environ`` are
    ``hpc_host.Client``'s. A block is one job running Parsl's worker command
    under ``launcher`` after ``worker_init`` (in ``bash``). ``cores_per_node``,
    ``mem_per_node`` (GB), ``walltime`` and ``nodes_per_block`` become the job's
    resource requirements; ``extra`` adds the backend's guarded keys (for SLURM
    e.g. ``account``, ``qos``, ``constraint``); ``environment`` sets variables in
    the job. ``workspace_dir`` is the backend's workspace, where it keeps the
    block's script and output (default: the backend's own, e.g. SLURM's
    ``HPC_SLURM_WORKDIR``; a folder given here must be granted by its policy).

    A job gets the backend's minimal environment, not the submitter's (see
    docs/python.md, "The environment a job gets"); with ``carry_interpreter``
    (the default) the block's script first puts this interpreter's ``bin``
    folder in front of ``PATH`` and sets ``VIRTUAL_ENV`` when in a virtual
    environment, so Parsl's worker command is found without ``worker_init``;
    ``worker_init`` runs after, and may say otherwise.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        env: str | None = None,
        config: str | None = None,
        socket: str | None = None,
        transport: Transport = "daemon",
        autostart: bool = True,
        environ: Mapping[str, str] | None = None,
        nodes_per_block: int = 1,
        init_blocks: int = 1,
        min_blocks: int = 0,
        max_blocks: int = 1,
        parallelism: float = 1,
        launcher: Launcher | None = None,
        worker_init: str = "",
        cores_per_node: int | None = None,
        mem_per_node: float | None = None,
        walltime: str = "00:30:00",
        extra: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        workspace_dir: str | None = None,
        status_polling_interval: int = 5,
        label: str | None = None,
        carry_interpreter: bool = True,
    ) -> None:
        if status_polling_interval <= 0:
            raise ValueError("`status_polling_interval` must be positive")
        _hours(walltime)
        self.backend = backend
        self.env = env
        self.config = config
        self.socket = socket
        self.transport = transport
        self.autostart = autostart
        self.environ = dict(environ or {})
        self.nodes_per_block = nodes_per_block
        self.init_blocks = init_blocks
        self.min_blocks = min_blocks
        self.max_blocks = max_blocks
        self.parallelism = parallelism
        self.launcher = launcher if launcher is not None else SingleNodeLauncher()
        self.worker_init = worker_init
        self.cores_per_node = cores_per_node
        self.mem_per_node = mem_per_node
        self.walltime = walltime
        self.extra = dict(extra or {})
        self.environment = dict(environment or {})
        self.workspace_dir = workspace_dir
        self.carry_interpreter = carry_interpreter
        self.script_dir: str | None = None
        self._polling = status_polling_interval
        self._label = label or f"hpc-host-{backend or 'default'}"
        #: Jobs by id: ``{"job_id", "job_name", "status": JobStatus}`` (Parsl's convention).
        self.resources: dict[object, Any] = {}
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The hpc-host client (made on first use, so a config can be pickled before)."""
        if self._client is None:
            self._client = Client(
                backend=self.backend,
                env=self.env,
                config=self.config,
                socket=self.socket,
                transport=self.transport,
                autostart=self.autostart,
                environ=self.environ,
            )
        return self._client

    @property
    def label(self) -> str:
        """The provider's name in Parsl's logs and monitoring."""
        return self._label

    @property
    def status_polling_interval(self) -> int:
        """Seconds between Parsl's ``status`` calls (each one request to the daemon)."""
        return self._polling

    def spec(self, command: str, tasks_per_node: int, job_name: str) -> JobSpec:
        """The hpc-host job spec of one block."""
        script = self.launcher(command, tasks_per_node, self.nodes_per_block)
        if self.worker_init:
            script = f"{self.worker_init}\n{script}"
        if self.carry_interpreter:
            script = shell_prelude() + script
        env = dict(self.environment)
        res: dict[str, Any] = dict(self.extra)
        res["time_hours"] = _hours(self.walltime)
        if self.nodes_per_block > 1:
            res["nodes"] = self.nodes_per_block
        if self.cores_per_node is not None:
            res["cpu"] = self.cores_per_node
            env["PARSL_CORES"] = str(self.cores_per_node)
        if self.mem_per_node is not None:
            res["memory_gb"] = self.mem_per_node
            env["PARSL_MEMORY_GB"] = str(self.mem_per_node)
        workspace = self.workspace_dir
        return JobSpec(
            execution_command=["/bin/bash", "-c", script],
            job_name=re.sub(r"[^A-Za-z0-9._-]", "_", job_name)[:64],
            workspace_dir=None if workspace is None else os.path.abspath(workspace),
            resource_requirements=res,
            environment_variables=env,
        )

    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.hpc-host") -> str:
        """Start one block; returns its hpc-host job id."""
        try:
            job_id = self.client.submit(self.spec(command, tasks_per_node, job_name))
        except HpcHostError as e:
            raise SubmitException(job_name, e.message) from e  # type: ignore[no-untyped-call]
        self.resources[job_id] = {
            "job_id": job_id,
            "job_name": job_name,
            "status": JobStatus(JobState.PENDING),
        }
        return job_id

    def status(self, job_ids: Sequence[object]) -> list[JobStatus]:
        """The status of every block, from one request to the daemon.

        When the request fails (the daemon or the scheduler is down), each
        block keeps its last known status; an id the backend does not know is
        ``UNKNOWN``.
        """
        ids = [str(j) for j in job_ids]
        if not ids:
            return []
        try:
            answers = self.client.statuses(ids)
        except HpcHostError as e:
            log.warning("hpc-host status failed, keeping the last known: %s", e)
            return [self._last(i) for i in ids]
        out: list[JobStatus] = []
        for job_id, answer in zip(ids, answers):
            if isinstance(answer, HPCJobInfo):
                st = parsl_status(answer)
            else:
                st = JobStatus(JobState.UNKNOWN, message=answer.message)
            self.resources.setdefault(job_id, {"job_id": job_id})["status"] = st
            out.append(st)
        return out

    def cancel(self, job_ids: Sequence[object]) -> list[bool]:
        """Cancel blocks; ``True`` for each the backend accepted to cancel."""
        out: list[bool] = []
        for j in job_ids:
            job_id = str(j)
            try:
                self.client.cancel(job_id)
            except HpcHostError as e:
                log.warning("cancelling block %s failed: %s", job_id, e)
                out.append(False)
                continue
            self.resources.setdefault(job_id, {"job_id": job_id})["status"] = JobStatus(
                JobState.CANCELLED
            )
            out.append(True)
        return out

    def _last(self, job_id: str) -> JobStatus:
        st = self.resources.get(job_id, {}).get("status")
        return st if isinstance(st, JobStatus) else JobStatus(JobState.UNKNOWN)

    def __getstate__(self) -> dict[str, Any]:
        # The client holds sockets and locks; a copy makes its own.
        state = dict(self.__dict__)
        state["_client"] = None
        return state
