"""A minimal local-like backend in Python, for the large-plugin benchmark
(BENCHMARKS.md): componentize-py makes it a ~19 MB component. Jobs run under
the host's supervisor (`process.spawn-job`); a JSON record per job in `kv`;
a keyed submit's id is derived from its key. `plugins/template-py` is the
plugin to copy; this one only has to be large and correct.
"""

import hashlib
import json
import uuid

from wit_world import exports
from wit_world.imports import kv, process
from wit_world.imports.ccat_hpc_types_0_1_0 import (
    BackendError_InvalidRequest,
    BackendError_Internal,
    BackendError_NotFound,
    HpcJobInfo,
    JobLogs,
    JobStatus,
    PluginInfo,
)
from componentize_py_types import Err, Ok


def _not_found(job_id):
    return Err(BackendError_NotFound(f"no job `{job_id}`"))


def _load(job_id):
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise _not_found(job_id)
    raw = kv.get(f"job/{job_id}")
    if raw is None:
        raise _not_found(job_id)
    return json.loads(raw)


def _info(job_id, state):
    if isinstance(state, process.JobState_Running):
        return HpcJobInfo(job_id, JobStatus.RUNNING, None, None, None, None, "RUNNING", None)
    if isinstance(state, process.JobState_Lost):
        return HpcJobInfo(job_id, JobStatus.FAILED, None, None, None, None, "LOST", state.value)
    u = state.value
    ok = u.exit_code == 0 and not u.cancelled and not u.timed_out
    native, reason = "COMPLETED" if ok else "FAILED", None
    if u.timed_out:
        native, reason = "TIMEOUT", "time limit reached"
    elif u.cancelled:
        native, reason = "CANCELLED", "cancelled"
    return HpcJobInfo(
        job_id,
        JobStatus.COMPLETED if ok else JobStatus.FAILED,
        u.exit_code,
        u.wall_time_seconds,
        u.cpu_seconds / 3600.0,
        u.peak_rss_bytes / 2**30,
        native,
        reason,
    )


class HpcBackend(exports.HpcBackend):
    def submit(self, spec):
        argv = list(spec.execution_command)
        if not argv or not argv[0]:
            raise Err(BackendError_InvalidRequest("`execution_command` is empty"))
        key = spec.idempotency_key
        if key:
            job_id = str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))
        else:
            job_id = str(uuid.uuid4())
        hours = spec.resource_requirements.time_hours
        limit = None if hours is None else max(1, int(-(-hours * 3600 // 1)))
        kv.set(f"job/{job_id}", json.dumps({"argv": argv, "key": key}).encode(), None)
        if key:
            kv.set(f"key/{hashlib.sha256(key.encode()).hexdigest()}", job_id.encode(), None)
        try:
            process.spawn_job(
                process.JobRequest(job_id, argv, list(spec.environment_variables), spec.workspace_dir, limit)
            )
        except Err as e:
            kv.delete(f"job/{job_id}")
            raise Err(BackendError_Internal(f"cannot start the job: {e.value}"))
        return job_id

    def find_job(self, idempotency_key, since):
        raw = kv.get(f"key/{hashlib.sha256(idempotency_key.encode()).hexdigest()}")
        return None if raw is None else raw.decode()

    def get_status(self, job_id):
        result = self.get_statuses([job_id])[0]
        if isinstance(result, Err):
            raise result
        return result.value

    def get_statuses(self, job_ids):
        known = []
        for job_id in job_ids:
            try:
                _load(job_id)
                known.append(job_id)
            except Err:
                pass
        states = dict(zip(known, process.job_states(known))) if known else {}
        out = []
        for job_id in job_ids:
            state = states.get(job_id)
            if state is None:
                out.append(_not_found(job_id))
            elif isinstance(state, Err):
                out.append(Err(BackendError_Internal(str(state.value))))
            else:
                out.append(Ok(_info(job_id, state.value)))
        return out

    def cancel(self, job_id):
        _load(job_id)
        try:
            process.kill_job(job_id)
        except Err as e:
            raise Err(BackendError_Internal(str(e.value)))

    def get_logs(self, job_id):
        _load(job_id)
        try:
            out = process.read_job_log(job_id, process.LogStream.STDOUT, 4 << 20)
            err = process.read_job_log(job_id, process.LogStream.STDERR, 4 << 20)
        except Err as e:
            raise Err(BackendError_Internal(str(e.value)))
        return JobLogs(out, err)

    def describe(self):
        return PluginInfo("pyplugin", "0.1.0", "a local-like backend in Python (benchmark)", [])
