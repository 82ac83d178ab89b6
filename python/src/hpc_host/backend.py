"""``HpcHostBackend``: the workflow manager's ``HPCBackend``, backed by hpc-host.

A workflow manager that constructs one of its own backends replaces that line
with ``HpcHostBackend()`` and changes nothing else: the four methods keep the
seed's names, parameters and return types. ``get_status`` asks the daemon,
which answers from its one shared poll, so any number of threads and
processes asking about any number of jobs cost the scheduler one batched query
per interval.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import _ops
from ._options import Transport
from .client import Client
from .types import HPCJobInfo, JobSpec

__all__ = ["HpcHostBackend"]


class HpcHostBackend:
    """The seed's ``HPCBackend`` on hpc-host (any backend: local, slurm, kubernetes, a plugin).

    ``config``/``env``/``backend`` are the CLI's settings (default: the same
    ``settings.toml``, ``ENV_FOR_DYNACONF`` and ``HPC_BACKEND`` as the CLI);
    the other keywords go to ``Client``. Safe to share between threads; after
    a ``fork`` the child makes its own connection.
    """

    def __init__(
        self,
        *,
        config: str | os.PathLike[str] | None = None,
        env: str | None = None,
        backend: str | None = None,
        transport: Transport = "daemon",
        autostart: bool = True,
        client: Client | None = None,
        **client_options: Any,
    ) -> None:
        self._options: dict[str, Any] = dict(
            config=config,
            env=env,
            backend=backend,
            transport=transport,
            autostart=autostart,
            **client_options,
        )
        self._client = client
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The ``Client`` underneath (one per process)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = Client(**self._options)
                self._pid = os.getpid()
            return self._client

    def submit(
        self,
        execution_command: str | Sequence[str],
        image_ref: str | None = None,
        sif_path: str | None = None,
        input_dir: str | None = None,
        output_dir: str | None = None,
        workspace_dir: str | None = None,
        manifest_path: str | None = None,
        resource_requirements: Mapping[str, Any] | None = None,
        environment_variables: Mapping[str, str] | None = None,
        job_name: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Submit a job; returns the backend's job id.

        Pass ``idempotency_key`` (the execution id) to make the submit safe to
        repeat: a second submit with the same key returns the first job's id,
        even if the first caller crashed before it got it.

        ``execution_command`` is an argv list (no shell) or one string (run by
        ``/bin/sh -c``); ``resource_requirements`` takes ``cpu``, ``memory_gb``,
        ``time_hours``, ``gpus``, ``nodes`` and the backend's guarded extra keys.
        """
        spec = JobSpec(
            execution_command=execution_command,
            image_ref=image_ref,
            sif_path=sif_path,
            input_dir=input_dir,
            output_dir=output_dir,
            workspace_dir=workspace_dir,
            manifest_path=manifest_path,
            resource_requirements=resource_requirements or {},
            environment_variables=environment_variables or {},
            job_name=job_name,
            idempotency_key=idempotency_key,
        )
        return self.client.submit(spec)

    def submit_many(
        self,
        specs: Sequence[JobSpec | Mapping[str, Any]],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Submit many jobs in one request (SLURM: one job array per shape);
        their ids in order. Raises the first per-spec error after the rest
        were submitted (``Client.submit_many`` returns each instead)."""
        results = self.client.submit_many(specs, idempotency_keys=idempotency_keys)
        return _ops.all_or_raise(results)

    def get_status(self, job_id: str) -> HPCJobInfo:
        """The job's status (``NotFound`` for an id the backend does not know)."""
        return self.client.status(job_id)

    def get_statuses(self, job_ids: Sequence[str]) -> list[HPCJobInfo]:
        """The status of many jobs in one request, in order; raises the first per-id error."""
        return _ops.all_or_raise(self.client.statuses(job_ids))

    def wait(self, job_ids: Sequence[str], timeout: float | None = None) -> list[HPCJobInfo]:
        """Block until every job has ended (``WaitTimeout`` after ``timeout`` seconds)."""
        return self.client.wait(job_ids, timeout)

    def cancel(self, job_id: str) -> None:
        """Cancel the job (one that has ended already is not an error)."""
        self.client.cancel(job_id)

    def get_logs(self, job_id: str) -> str:
        """The job's output: its stdout followed by its stderr."""
        logs = self.client.logs(job_id)
        return logs.stdout + logs.stderr
