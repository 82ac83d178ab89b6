"""The backend's logic, over a `Host`: a `local`-like backend that runs each
job as a process under the host's supervisor (`process.spawn-job`) and keeps
a JSON record per job in kv. Replace it with your scheduler's: the shape
(records, keyed ids, per-id errors, states that only move forward) stays.

Everything here runs natively under pytest with `hpc_plugin.fake.FakeHost`.
"""

from __future__ import annotations

from typing import Any

from componentize_py_types import Err, Ok
from wit_world.imports import process
from wit_world.imports.ccat_hpc_types_0_1_0 import (
    BackendError,
    HpcJobInfo,
    JobLogs,
    JobStatus,
    PluginInfo,
)
from wit_world.imports.ccat_hpc_types_0_2_0 import JobSpec
from wit_world.imports.logging import Level

from hpc_plugin import apptainer, ids
from hpc_plugin.errors import (
    BackendFailure,
    from_process,
    invalid_request,
    not_found,
    to_backend_error,
)
from hpc_plugin.host import NOT_STARTED, Host, waits_for_slot
from hpc_plugin.records import Records
from hpc_plugin.spec import check_command, check_no_nul, hours_to_seconds

#: The name the plugin is installed (`<name>.wasm`) and selected under.
NAME = "template-py"
VERSION = "0.1.0"
#: The most of each log stream `get-logs` returns (the tail is kept).
MAX_LOG_BYTES = 4 << 20
MAX_NAME = 255


def describe() -> PluginInfo:
    return PluginInfo(
        name=NAME,
        version=VERSION,
        description="runs jobs as supervised processes on this machine (Python template)",
        settings=[apptainer.SETTING_PROGRAM],
    )


def _validate(spec: JobSpec) -> int | None:
    """Refuse what cannot run as given; the time limit in seconds."""
    check_command(list(spec.execution_command))
    if spec.job_name is not None:
        if len(spec.job_name) > MAX_NAME:
            raise invalid_request(f"`job_name` is longer than {MAX_NAME} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in spec.job_name):
            raise invalid_request("`job_name` contains a control character")
    if spec.workspace_dir is not None and not spec.workspace_dir.startswith("/"):
        raise invalid_request(f"`workspace_dir` must be an absolute path, not `{spec.workspace_dir}`")
    for name, value in spec.environment_variables:
        if name == "" or "=" in name:
            raise invalid_request(f"`environment_variables`: `{name}` is not a variable name")
        check_no_nul(f"`environment_variables` {name}", name + value)
    hours = spec.resource_requirements.time_hours
    return None if hours is None else hours_to_seconds(hours)


def _command(host: Host, spec: JobSpec) -> tuple[list[str], list[tuple[str, str]]]:
    argv, env = list(spec.execution_command), list(spec.environment_variables)
    if spec.sif_path is None:
        return argv, env
    program = host.setting(apptainer.SETTING_PROGRAM) or apptainer.DEFAULT_PROGRAM
    mounts = [("`input_dir`", spec.input_dir), ("`output_dir`", spec.output_dir),
              ("`workspace_dir`", spec.workspace_dir)]
    return apptainer.wrap(program, spec.sif_path, mounts, argv), apptainer.container_env(env)


def submit(host: Host, spec: JobSpec) -> str:
    time_limit = _validate(spec)
    argv, env = _command(host, spec)
    key = spec.idempotency_key
    if key is not None:
        # The host holds the key's claim: no other submit with it runs now.
        # A job an earlier submit made (whose id the host lost) is this one.
        found = find_job(host, key, 0.0)
        if found is not None:
            return found
        job_id = ids.keyed_id(key)
    else:
        job_id = ids.new_id()
    records = Records(host)
    # The record first: if the store is down nothing starts, and a job that
    # runs always has a record.
    records.put(job_id, {
        "job_id": job_id, "job_name": spec.job_name, "argv": argv,
        "submitted_at": host.now(), "idempotency_key": key, "outcome": None,
    })
    try:
        host.spawn_job(process.JobRequest(
            id=job_id, argv=argv, env=env, working_dir=spec.workspace_dir,
            time_limit_seconds=time_limit))
    except Err as e:
        try:
            records.delete(job_id)
        except Err:
            pass
        raise BackendFailure(from_process(e.value)) from None
    host.log(Level.INFO, f"submitted {job_id}: {argv[0]}")
    return job_id


def submit_many(host: Host, specs: list[JobSpec]) -> list[Ok[str] | Err[BackendError]]:
    """Many jobs, in order: each its id or its own error (a refused spec
    does not stop the others). One `submit` each here; a scheduler that can
    make many jobs in one request (a job array) does that instead."""
    out: list[Ok[str] | Err[BackendError]] = []
    for spec in specs:
        try:
            out.append(Ok(submit(host, spec)))
        except BaseException as exc:  # noqa: BLE001 - every failure is an answer
            out.append(Err(to_backend_error(exc)))
    return out


def find_job(host: Host, idempotency_key: str, since: float) -> str | None:
    """The job a keyed submit made: the supervisor knows it. A record whose
    job never started (its submitter died in between) is dropped."""
    job_id = ids.keyed_id(idempotency_key)
    [state] = host.job_states([job_id])
    if isinstance(state, Ok):
        return job_id
    if isinstance(state.value, process.ProcessError_NotFound):
        Records(host).delete(job_id)
        return None
    raise BackendFailure(from_process(state.value))


def _outcome(state: Any) -> dict[str, Any]:
    """How a job ended, from the supervisor's word."""
    if isinstance(state, process.JobState_Lost):
        return {"completed": False, "exit_code": None, "wall_time_seconds": None,
                "cpu_hours": None, "peak_memory_gb": None, "native_state": "LOST",
                "reason": state.value}
    u = state.value
    if u.cancelled:
        completed, native, reason = False, "CANCELLED", "cancelled by `hpc-host cancel`"
    elif u.timed_out:
        completed, native, reason = False, "TIMEOUT", "time limit reached"
    elif u.signal is not None:
        completed, native, reason = False, "SIGNALED", f"killed by signal {u.signal}"
    elif u.exit_code == 0:
        completed, native, reason = True, "COMPLETED", None
    else:
        completed, native, reason = False, "FAILED", f"exit code {u.exit_code}"
    return {"completed": completed, "exit_code": u.exit_code,
            "wall_time_seconds": u.wall_time_seconds, "cpu_hours": u.cpu_seconds / 3600.0,
            "peak_memory_gb": u.peak_rss_bytes / float(1 << 30), "native_state": native,
            "reason": reason}


#: Why a job accepted but not started is pending (see `host.NOT_STARTED`).
WAITING_REASON = ("waiting for a free slot: at most `max_running_jobs` local jobs run at once "
                  "on this machine")


def _info(job_id: str, outcome: dict[str, Any] | None, running_since: float | None,
          now: float) -> HpcJobInfo:
    if outcome is None and running_since == NOT_STARTED:
        return HpcJobInfo(job_id=job_id, status=JobStatus.PENDING, exit_code=None,
                          wall_time_seconds=None, cpu_hours=None, peak_memory_gb=None,
                          native_state="PENDING", reason=WAITING_REASON)
    if outcome is None:
        wall = None if running_since is None else max(now - running_since, 0.0)
        return HpcJobInfo(job_id=job_id, status=JobStatus.RUNNING, exit_code=None,
                          wall_time_seconds=wall, cpu_hours=None, peak_memory_gb=None,
                          native_state="RUNNING", reason=None)
    return HpcJobInfo(
        job_id=job_id,
        status=JobStatus.COMPLETED if outcome["completed"] else JobStatus.FAILED,
        exit_code=outcome["exit_code"], wall_time_seconds=outcome["wall_time_seconds"],
        cpu_hours=outcome["cpu_hours"], peak_memory_gb=outcome["peak_memory_gb"],
        native_state=outcome["native_state"], reason=outcome["reason"])


def get_statuses(host: Host, job_ids: list[str]) -> list[Ok[HpcJobInfo] | Err[BackendError]]:
    """One kv round trip and one supervisor query for all ids, in order; an
    id we do not know is `not-found` for that id only."""
    records = Records(host)
    parsed = [ids.parse_id(j) for j in job_ids]
    valid = [p for p in parsed if p is not None]
    stored = iter(records.get_many(valid))
    recs: list[dict[str, Any] | None] = [None if p is None else next(stored) for p in parsed]
    # Ask the supervisor about every job whose end is not recorded (and
    # about ids the store does not hold: a store that lost its data loses no job).
    ask = [p for p, r in zip(parsed, recs) if p is not None and (r is None or r.get("outcome") is None)]
    states = dict(zip(ask, host.job_states(ask))) if ask else {}
    now = host.now()
    out: list[Ok[HpcJobInfo] | Err[BackendError]] = []
    for raw, p, rec in zip(job_ids, parsed, recs):
        if p is None:
            out.append(Err(not_found(f"no job `{raw}` (not one of this backend's ids)").error))
            continue
        if rec is not None and rec.get("outcome") is not None:
            out.append(Ok(_info(p, rec["outcome"], None, now)))
            continue
        state = states[p]
        if isinstance(state, Err):
            if isinstance(state.value, process.ProcessError_NotFound):
                out.append(Err(not_found(f"no job `{raw}`").error))
            else:
                out.append(Err(from_process(state.value)))
            continue
        if rec is None:  # known to the supervisor, lost by the store: index it again
            rec = {"job_id": p, "job_name": None, "argv": [], "submitted_at": None,
                   "idempotency_key": None, "outcome": None}
        if isinstance(state.value, process.JobState_Running):
            out.append(Ok(_info(p, None, state.value.value, now)))
            if rec.get("submitted_at") is None and not waits_for_slot(state.value):
                rec["submitted_at"] = state.value.value
                records.put_quietly(p, rec)
            continue
        # Ended: record the end once; it never changes after.
        rec["outcome"] = _outcome(state.value)
        records.put_quietly(p, rec)
        out.append(Ok(_info(p, rec["outcome"], None, now)))
    return out


def get_status(host: Host, job_id: str) -> HpcJobInfo:
    [r] = get_statuses(host, [job_id])
    if isinstance(r, Err):
        raise BackendFailure(r.value)
    return r.value


def _known(host: Host, job_id: str) -> str:
    """The canonical id of a job we know (by record or by supervisor)."""
    p = ids.parse_id(job_id)
    if p is None:
        raise not_found(f"no job `{job_id}` (not one of this backend's ids)")
    if Records(host).get(p) is None:
        [state] = host.job_states([p])
        if isinstance(state, Err):
            if isinstance(state.value, process.ProcessError_NotFound):
                raise not_found(f"no job `{job_id}`")
            raise BackendFailure(from_process(state.value))
    return p


def cancel(host: Host, job_id: str) -> None:
    """Stop the job; a job that has already ended is no error."""
    p = _known(host, job_id)
    rec = Records(host).get(p)
    if rec is not None and rec.get("outcome") is not None:
        return
    try:
        host.kill_job(p)
    except Err as e:
        raise BackendFailure(from_process(e.value)) from None
    get_statuses(host, [p])  # records the end if the job is gone already


def get_logs(host: Host, job_id: str) -> JobLogs:
    p = _known(host, job_id)
    try:
        return JobLogs(stdout=host.read_job_log(p, process.LogStream.STDOUT, MAX_LOG_BYTES),
                       stderr=host.read_job_log(p, process.LogStream.STDERR, MAX_LOG_BYTES))
    except Err as e:
        raise BackendFailure(from_process(e.value)) from None

