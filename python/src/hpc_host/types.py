"""Typed data with the workflow manager's names: ``JobSpec``, ``HPCJobInfo``, ``JobLogs``.

They mirror the CLI's ``--output json`` shapes (and the daemon's, which are the
same), so ``HPCJobInfo.from_json`` reads either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

__all__ = ["JobStatus", "JobSpec", "HPCJobInfo", "JobLogs", "JobEvent", "FINAL"]

#: The seed's four states.
JobStatus = Literal["pending", "running", "completed", "failed"]
#: The states a job never leaves.
FINAL: frozenset[str] = frozenset({"completed", "failed"})
_STATUSES: frozenset[str] = frozenset({"pending", "running", "completed", "failed"})


@dataclass(frozen=True)
class JobSpec:
    """What to run and with what: the ``--spec`` JSON of ``hpc-host submit``.

    ``execution_command`` is an argv list (run without a shell) or one string
    (run as ``/bin/sh -c STRING``). ``resource_requirements`` takes ``cpu``,
    ``memory_gb``, ``time_hours``, ``gpus``, ``nodes`` and the backend's guarded
    extra keys (e.g. ``account`` for SLURM).
    """

    execution_command: Sequence[str] | str
    job_name: str | None = None
    image_ref: str | None = None
    sif_path: str | None = None
    input_dir: str | None = None
    output_dir: str | None = None
    workspace_dir: str | None = None
    manifest_path: str | None = None
    resource_requirements: Mapping[str, Any] = field(default_factory=dict)
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    #: Your name for this submission (e.g. the workflow's execution id):
    #: submitting again with the same key returns the first job's id, after
    #: any crash, instead of making a second job. 1 to 200 of
    #: ``A-Z a-z 0-9 . _ : @ / + = -``.
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec as the host reads it (fields that are ``None`` left out)."""
        cmd: Any = (
            self.execution_command
            if isinstance(self.execution_command, str)
            else list(self.execution_command)
        )
        out: dict[str, Any] = {"execution_command": cmd}
        for name in (
            "job_name",
            "image_ref",
            "sif_path",
            "input_dir",
            "output_dir",
            "workspace_dir",
            "manifest_path",
            "idempotency_key",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.resource_requirements:
            out["resource_requirements"] = dict(self.resource_requirements)
        if self.environment_variables:
            out["environment_variables"] = dict(self.environment_variables)
        return out


@dataclass(frozen=True)
class HPCJobInfo:
    """A job's status as the backend last reported it (the seed's ``HPCJobInfo``).

    ``native_state`` is the scheduler's own word (``TIMEOUT``, ``CANCELLED``,
    ``OOMKilled``) and ``reason`` says why a job failed. From the daemon,
    ``observed_at`` (Unix seconds) says when the backend reported it.
    """

    status: JobStatus
    job_id: str | None = None
    exit_code: int | None = None
    wall_time_seconds: float | None = None
    cpu_hours: float | None = None
    peak_memory_gb: float | None = None
    native_state: str | None = None
    reason: str | None = None
    observed_at: float | None = None
    backend: str | None = None

    @property
    def is_final(self) -> bool:
        """Whether the job has ended (``completed`` or ``failed``)."""
        return self.status in FINAL

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HPCJobInfo:
        """Read one JobInfo object of the CLI's or the daemon's JSON.

        Raises ``ValueError`` when it carries no valid status (an id that could
        not be answered has ``"status": null`` and an ``"error"``: callers
        check for that first).
        """
        status = obj.get("status")
        if status not in _STATUSES:
            raise ValueError(f"not a job status: {status!r}")

        def num(key: str) -> float | None:
            v = obj.get(key)
            return None if v is None else float(v)

        exit_code = obj.get("exit_code")
        return cls(
            status=cast(JobStatus, status),
            job_id=_opt_str(obj.get("job_id")),
            exit_code=None if exit_code is None else int(exit_code),
            wall_time_seconds=num("wall_time_seconds"),
            cpu_hours=num("cpu_hours"),
            peak_memory_gb=num("peak_memory_gb"),
            native_state=_opt_str(obj.get("native_state")),
            reason=_opt_str(obj.get("reason")),
            observed_at=num("observed_at"),
            backend=_opt_str(obj.get("backend")),
        )


@dataclass(frozen=True)
class JobLogs:
    """A job's output so far: what it wrote to stdout and to stderr."""

    stdout: str
    stderr: str


@dataclass(frozen=True)
class JobEvent:
    """A status change of a job, as the daemon's event stream pushes it.

    ``previous`` is ``None`` on the first event of a job named in the request
    (its state when the stream started).
    """

    job_id: str
    info: HPCJobInfo
    previous: JobStatus | None = None
    backend: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> JobEvent:
        """Read one line of ``/v1/events``."""
        info = HPCJobInfo.from_json(obj)
        prev = obj.get("previous")
        return cls(
            job_id=str(obj.get("job_id")),
            info=info,
            previous=cast(JobStatus, prev) if prev in _STATUSES else None,
            backend=_opt_str(obj.get("backend")),
        )


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)
