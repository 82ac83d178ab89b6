"""Snakemake's executor plugin ``hpc-host``: Snakemake's jobs as hpc-host jobs.

``snakemake --executor hpc-host [--hpc-host-backend slurm]``. Each Snakemake
job is one hpc-host job that runs Snakemake again for that job (as every
remote executor does); the plugin talks to this user's hpc-host daemon:

- ``run_job`` submits with an idempotency key made of the working folder,
  the rule and the job's outputs: a run restarted after a crash gets the job
  still pending or running instead of submitting it again (a job of that key
  that ended is not taken: the next key of the chain is used).
- ``check_active_jobs`` asks for every active job in one request (the daemon
  answers from its one shared poll of the scheduler).
- ``cancel_jobs`` cancels through the daemon.
- Resources: ``threads`` (or ``cpus_per_task``) → ``cpu``, ``mem_mb`` (or
  ``mem_mb_per_cpu`` × cpu) → ``memory_gb``, ``runtime`` (minutes) →
  ``time_hours``, ``gpu``/``gpus`` → ``gpus``, ``nodes`` → ``nodes``,
  ``slurm_account`` → ``account``, ``qos``/``constraint``/``reservation`` as
  they are, ``slurm_partition`` → the ``SLURM_PARTITION`` setting of that
  submission. A ``container:`` that is a local ``.sif`` file → ``sif_path``
  (other images → ``image_ref``) when Snakemake itself is not asked to deploy
  containers (``--sdm apptainer``): the job's Snakemake then runs inside it.
"""

import hashlib
import os
import shlex
import threading
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
)

import hpc_host
from hpc_host import HPCJobInfo, HpcHostError, JobSpec, NotFound, Unavailable
from hpc_host._jobenv import interpreter_bin, virtual_env

__all__ = ["ExecutorSettings", "Executor", "common_settings", "job_spec", "resources_of"]


def _option(help: str, default: Any = None, **metadata: Any) -> Any:
    """A ``--hpc-host-*`` option with its ``--help`` text (and further
    argparse ``metadata`` such as ``nargs``), never read from an environment
    variable: hpc-host reads its own settings from there. A list default is a
    new list for each settings object."""
    metadata = {"help": help, "env_var": False, **metadata}
    if isinstance(default, list):
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """``--hpc-host-*`` options. (Snakemake reads the field types at run time:
    ``Optional``/``List``, no postponed annotations in this module.)"""

    backend: Optional[str] = _option("The hpc-host backend (default: the daemon's, `HPC_BACKEND`).")
    env: Optional[str] = _option("The settings environment (`--env` of hpc-host).")
    config: Optional[str] = _option("The settings file (`--config` of hpc-host).")
    socket: Optional[str] = _option("The daemon's socket (default: the one hpc-host computes).")
    transport: str = _option("`daemon` (default) or `cli` (one hpc-host process per call).", "daemon")
    environ: List[str] = _option(
        "NAME=VALUE variables for hpc-host and a daemon it starts "
        "(e.g. CCAT_WORKFLOW_MANAGER_SLURM_PARTITION=debug).",
        [],
        nargs="+",
    )
    minimal_environment: bool = _option(
        "Do not put this interpreter's bin folder in front of each job's PATH "
        "nor pass VIRTUAL_ENV (done by default: hpc-host gives jobs a minimal environment).",
        False,
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # Variables go in the job spec, not into shell text.
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)

#: Resources passed under hpc-host's guarded extra names.
_EXTRAS = {
    "slurm_account": "account",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "reservation": "reservation",
}
#: Backends whose queue is a setting, and that setting.
_QUEUE_SETTINGS = {"slurm": "SLURM_PARTITION"}


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def resources_of(job: JobExecutorInterface) -> dict[str, Any]:
    """hpc-host's ``resource_requirements`` for a Snakemake job."""
    res = job.resources
    out: dict[str, Any] = {}
    cpus = _num(res.get("cpus_per_task")) or _num(job.threads) or 1
    out["cpu"] = int(cpus)
    mem_mb = _num(res.get("mem_mb"))
    per_cpu = _num(res.get("mem_mb_per_cpu"))
    if per_cpu:
        mem_mb = per_cpu * out["cpu"]
    if mem_mb:
        out["memory_gb"] = round(mem_mb / 1024, 4)
    runtime = _num(res.get("runtime"))
    if runtime:
        out["time_hours"] = runtime / 60
    gpus = _num(res.get("gpus")) or _num(res.get("gpu"))
    if gpus:
        out["gpus"] = int(gpus)
    nodes = _num(res.get("nodes"))
    if nodes and nodes > 1:
        out["nodes"] = int(nodes)
    for key, name in _EXTRAS.items():
        value = res.get(key)
        if value not in (None, ""):
            out[name] = str(value)
    return out


def _container(job: JobExecutorInterface, deploys_containers: bool) -> dict[str, str]:
    """``sif_path`` (a local file) or ``image_ref`` (a URL) for a rule's ``container:``."""
    img = getattr(job, "container_img_url", None)
    if not img or deploys_containers:
        return {}
    img = str(img)
    if "://" in img:
        return {"image_ref": img}
    return {"sif_path": os.path.abspath(img)}


def job_spec(
    job: JobExecutorInterface,
    exec_job: str,
    workdir: str,
    envvars: Mapping[str, str],
    *,
    carry_interpreter: bool = True,
    deploys_containers: bool = False,
) -> JobSpec:
    """The hpc-host spec of one Snakemake job running ``exec_job`` (Snakemake's
    own shell command) in ``workdir``."""
    env = dict(envvars)
    script = f"cd {shlex.quote(workdir)} || exit 126\n{exec_job}\n"
    if carry_interpreter:
        prelude = f'export PATH={shlex.quote(interpreter_bin())}:"$PATH"\n'
        venv = virtual_env()
        if venv is not None and "VIRTUAL_ENV" not in env:
            env["VIRTUAL_ENV"] = venv
        script = prelude + script
    name = f"group_{job.name}" if job.is_group() else f"rule_{job.name}"
    return JobSpec(
        execution_command=["/bin/bash", "-c", script],
        job_name=f"smk.{name}.{job.jobid}"[:64],
        resource_requirements=resources_of(job),
        environment_variables=env,
        **_container(job, deploys_containers),
    )


def job_key(workdir: str, job: JobExecutorInterface, n: int = 0) -> str:
    """The idempotency key of a Snakemake job (``n``: its place in the chain)."""
    h = hashlib.sha256()
    h.update(workdir.encode())
    h.update(b"\0" + job.name.encode())
    for out in sorted(str(o) for o in job.output):
        h.update(b"\0" + out.encode())
    return f"smk-{h.hexdigest()[:40]}-{n}"


class Executor(RemoteExecutor):  # type: ignore[misc]
    """Snakemake's jobs as hpc-host jobs."""

    def __post_init__(self) -> None:
        s: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.settings = s
        environ: dict[str, str] = {}
        for item in s.environ or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise WorkflowError(f"--hpc-host-environ takes NAME=VALUE, not `{item}`")
            environ[name] = value
        if s.transport not in ("daemon", "cli"):
            raise WorkflowError(f"--hpc-host-transport is `daemon` or `cli`, not `{s.transport}`")
        self._client_kw: dict[str, Any] = dict(
            backend=s.backend, env=s.env, config=s.config, socket=s.socket, environ=environ,
        )
        self.client = hpc_host.Client(transport=s.transport, **self._client_kw)  # type: ignore[arg-type]
        self._queue_clients: dict[str, hpc_host.Client] = {}
        self._lock = threading.Lock()
        self.workdir = os.path.abspath(str(self.workflow.workdir_init))
        methods = {str(m).lower() for m in self.workflow.deployment_settings.deployment_method}
        self._deploys_containers = any("apptainer" in m or "singularity" in m for m in methods)
        self.logdir = Path(self.workdir) / ".snakemake" / "hpc-host-logs"

    # -- submit ---------------------------------------------------------------

    def _client_for(self, job: JobExecutorInterface) -> hpc_host.Client:
        """The client for a job: with a ``slurm_partition``, one whose settings name it."""
        part = job.resources.get("slurm_partition")
        setting = _QUEUE_SETTINGS.get(self.settings.backend or "")
        if not part or setting is None:
            return self.client
        part = str(part)
        with self._lock:
            c = self._queue_clients.get(part)
            if c is None:
                kw = dict(self._client_kw)
                kw["environ"] = {**kw["environ"], f"CCAT_WORKFLOW_MANAGER_{setting}": part}
                # The daemon serves one settings set: a partition of its own is one CLI run.
                c = self._queue_clients[part] = hpc_host.Client(transport="cli", **kw)
            return c

    def _submit_keyed(self, client: hpc_host.Client, job: JobExecutorInterface, spec: JobSpec) -> str:
        """Submit with the job's key; a key whose job has ended already (an
        earlier run's) moves on to the next key of the chain.

        The same key returns the same job: a run restarted after its Snakemake
        died gets the job still pending or running instead of a second one.
        Neither the keyed submit of a new key nor the status of a job the
        daemon knows asks the scheduler anything (``find_job`` of an unknown
        key would: one squeue and one sacct per job).
        """
        n = 0
        while True:
            job_id = client.submit(spec, idempotency_key=job_key(self.workdir, job, n))
            try:
                info: HPCJobInfo | None = self.client.status(job_id)
            except NotFound:
                info = None
            if info is not None and not info.is_final:
                return job_id
            n += 1

    def run_job(self, job: JobExecutorInterface) -> None:
        client = self._client_for(job)
        spec = job_spec(
            job,
            self.format_job_exec(job),
            self.workdir,
            self.envvars(),
            carry_interpreter=not self.settings.minimal_environment,
            deploys_containers=self._deploys_containers,
        )
        try:
            job_id = self._submit_keyed(client, job, spec)
        except HpcHostError as e:
            raise WorkflowError(f"hpc-host refused to submit {job}: {e.message}") from e
        self.logger.info(f"Job {job.jobid} is hpc-host job {job_id}")
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=job_id))

    # -- status ---------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        ids = [str(j.external_jobid) for j in active_jobs]
        async with self.status_rate_limiter:
            try:
                answers = self.client.statuses(ids)
            except Unavailable as e:
                self.logger.warning(f"hpc-host status failed (retrying): {e.message}")
                for j in active_jobs:
                    yield j
                return
        for j, answer in zip(active_jobs, answers):
            if isinstance(answer, HPCJobInfo):
                if answer.status == "completed":
                    self.report_job_success(j)
                elif answer.status == "failed":
                    self._report_failure(j, answer)
                else:
                    yield j
            elif isinstance(answer, Unavailable):
                yield j
            else:
                self.report_job_error(j, msg=f"hpc-host: {answer.message}. ")

    def _report_failure(self, j: SubmittedJobInfo, info: HPCJobInfo) -> None:
        parts = [info.native_state, info.reason]
        if info.exit_code is not None and f"exit code {info.exit_code}" not in (info.reason or ""):
            parts.append(f"exit code {info.exit_code}")
        why = ", ".join(x for x in parts if x)
        aux: list[str] = []
        try:
            logs = self.client.logs(str(j.external_jobid))
            self.logdir.mkdir(parents=True, exist_ok=True)
            path = self.logdir / f"{j.external_jobid}.log"
            path.write_text(f"--- stdout ---\n{logs.stdout}\n--- stderr ---\n{logs.stderr}")
            aux.append(str(path))
        except (HpcHostError, OSError):
            pass
        self.report_job_error(j, msg=f"hpc-host job {j.external_jobid} failed ({why}). ", aux_logs=aux)

    # -- cancel ---------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        for j in active_jobs:
            try:
                self.client.cancel(str(j.external_jobid))
            except HpcHostError as e:
                self.logger.warning(f"hpc-host: cancelling {j.external_jobid} failed: {e.message}")
