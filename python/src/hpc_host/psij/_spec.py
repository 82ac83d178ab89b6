"""PSI/J's ``JobSpec`` as an hpc-host job spec, with the stream launcher.

hpc-host's contract has no field for a job's standard streams or its working
folder: every backend sends stdout and stderr to its own logs. Rather than
change the contract (and every site plugin with it), the job itself does it,
the way PSI/J's own executors wrap jobs in launcher scripts: the command that
hpc-host runs is a fixed ``/bin/sh -c`` script that changes to the job's
folder, opens the named files and ``exec``\\ s the job's argv. The paths reach
the script as environment variables and the argv as positional parameters,
so nothing the user gave is ever spliced into shell text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psij import InvalidJobException
from psij import JobSpec as PsijSpec
from psij.job_attributes import JobAttributes
from psij.resource_spec import ResourceSpecV1

from .._jobenv import interpreter_bin, virtual_env
from ..types import JobSpec

__all__ = ["LAUNCHER", "LAUNCHER_VARS", "to_hpc_spec", "queue_of"]

#: The launcher: ``$0`` is a label, ``$1...`` the job's argv. A variable that
#: is not set leaves that stream (or the folder) as the backend gives it, so
#: stdout and stderr not named by the spec still reach ``hpc-host logs``.
LAUNCHER = (
    'if [ -n "${HPCJ_PATH+x}" ]; then PATH="$HPCJ_PATH:$PATH"; export PATH; fi\n'
    'if [ -n "${HPCJ_DIR+x}" ]; then cd -- "$HPCJ_DIR" || exit 126; fi\n'
    'if [ -n "${HPCJ_STDIN+x}" ]; then exec <"$HPCJ_STDIN" || exit 126; fi\n'
    'if [ -n "${HPCJ_STDOUT+x}" ]; then exec >"$HPCJ_STDOUT" || exit 126; fi\n'
    'if [ -n "${HPCJ_STDERR+x}" ]; then exec 2>"$HPCJ_STDERR" || exit 126; fi\n'
    "unset HPCJ_PATH HPCJ_DIR HPCJ_STDIN HPCJ_STDOUT HPCJ_STDERR\n"
    'exec "$@"\n'
)
#: The variables the launcher reads (a job's own environment may not set them).
LAUNCHER_VARS = ("HPCJ_PATH", "HPCJ_DIR", "HPCJ_STDIN", "HPCJ_STDOUT", "HPCJ_STDERR")
#: The typed resource keys (numbers); every other key is a backend extra (a string).
_TYPED = frozenset({"cpu", "memory_gb", "time_hours", "gpus", "nodes"})
#: ``$0`` of the launcher, which shells print in their error messages.
_LABEL = "hpc-host-psij"


def to_hpc_spec(spec: PsijSpec, backend: str | None, carry_interpreter: bool = True) -> JobSpec:
    """The hpc-host spec for a PSI/J spec (``InvalidJobException`` for what cannot map).

    With ``carry_interpreter``, the launcher puts this interpreter's ``bin``
    folder in front of the job's ``PATH`` and the job gets ``VIRTUAL_ENV``
    (in a virtual environment), unless the spec's ``environment`` sets them:
    PSI/J's own executors let a job inherit the submitter's environment, and
    hpc-host gives it a minimal one.
    """
    if not spec.executable:
        raise InvalidJobException("the job spec has no `executable`")
    argv = [str(spec.executable), *(str(a) for a in (spec.arguments or []))]
    env: dict[str, str] = {}
    for key, value in (spec.environment or {}).items():
        if key in LAUNCHER_VARS:
            raise InvalidJobException(f"environment variable `{key}` is reserved by the launcher")
        env[key] = str(value)
    streams = {
        "HPCJ_DIR": spec.directory,
        "HPCJ_STDIN": spec.stdin_path,
        "HPCJ_STDOUT": spec.stdout_path,
        "HPCJ_STDERR": spec.stderr_path,
    }
    for key, path in streams.items():
        if path is not None:
            env[key] = str(path)
    if carry_interpreter:
        if "PATH" not in env:
            env["HPCJ_PATH"] = interpreter_bin()
        venv = virtual_env()
        if venv is not None and "VIRTUAL_ENV" not in env:
            env["VIRTUAL_ENV"] = venv
    resources = _resources(spec.resources)
    resources.update(_attributes(spec.attributes, backend))
    directory = None if spec.directory is None else str(spec.directory)
    if directory is not None and not directory.startswith("/"):
        raise InvalidJobException(f"`directory` must be an absolute path, not `{directory}`")
    return JobSpec(
        execution_command=["/bin/sh", "-c", LAUNCHER, _LABEL, *argv],
        job_name=spec.name,
        # No `workspace_dir`: the backend keeps its own files (the SLURM
        # script and logs) in its default workspace, which its policy grants;
        # the launcher changes to the job's folder.
        resource_requirements=resources,
        environment_variables=env,
    )


def queue_of(spec: PsijSpec) -> str | None:
    """The queue a spec asks for (``queue_name``), if any."""
    attrs = spec.attributes
    return None if attrs is None else attrs.queue_name


def _resources(res: object) -> dict[str, Any]:
    """``ResourceSpecV1`` as ``cpu``/``nodes``/``gpus``/``memory_gb``; only what was asked."""
    out: dict[str, Any] = {}
    if res is None:
        return out
    if not isinstance(res, ResourceSpecV1):
        raise InvalidJobException(f"resource spec version {getattr(res, 'version', '?')} is not supported")
    asked_procs = any(
        v is not None for v in (res.process_count, res.processes_per_node, res.node_count)
    )
    procs = res.computed_process_count
    if res.cpu_cores_per_process is not None or asked_procs:
        out["cpu"] = procs * (res.cpu_cores_per_process or 1)
    if res.node_count is not None:
        out["nodes"] = res.computed_node_count
    if res.gpu_cores_per_process:
        out["gpus"] = procs * res.gpu_cores_per_process
    if res.memory is not None:
        if res.memory <= 0:
            raise InvalidJobException(f"`memory` must be positive, not {res.memory}")
        out["memory_gb"] = res.memory / 2**30
    if res.exclusive_node_use:
        out["exclusive"] = "true"
    return out


def _attributes(attrs: JobAttributes | None, backend: str | None) -> dict[str, Any]:
    """Duration as ``time_hours``; account, reservation and custom attributes as extras.

    Custom attributes named ``<backend>.key`` or ``hpc-host.key`` pass as
    ``key`` (PSI/J's batch executors read ``slurm.constraint`` the same way);
    other prefixed names are for other executors and are left out; names
    without a prefix pass as they are. The backend refuses keys it does not
    allow, with a message that lists those it does.
    """
    out: dict[str, Any] = {}
    if attrs is None:
        return out
    if attrs.duration is not None:
        seconds = attrs.duration.total_seconds()
        if seconds <= 0:
            raise InvalidJobException(f"`duration` must be positive, not {attrs.duration}")
        out["time_hours"] = seconds / 3600
    if attrs.account:
        out["account"] = attrs.account
    if attrs.reservation_id:
        out["reservation"] = attrs.reservation_id
    prefixes = ["hpc-host."] + ([f"{backend}."] if backend else [])
    for key, value in _custom(attrs).items():
        name = key
        for p in prefixes:
            if key.lower().startswith(p):
                name = key[len(p) :]
                break
        else:
            if "." in key:
                continue
        out[name] = value if name in _TYPED else str(value)
    return out


def _custom(attrs: JobAttributes) -> Mapping[str, object]:
    custom = attrs.custom_attributes
    return {} if custom is None else dict(custom)
