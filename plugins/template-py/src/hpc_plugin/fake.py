"""A fake host for tests: the `Host` methods in memory, with supervised jobs
whose end a test decides, scripted program answers, and a record of calls.
No wasm: pytest imports the backend and calls it with a `FakeHost`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from componentize_py_types import Err, Ok
from wit_world.imports import kv, process
from wit_world.imports.logging import Level


@dataclass
class FakeJob:
    req: process.JobRequest
    started: float
    state: process.JobState
    stdout: str = ""
    stderr: str = ""


@dataclass
class FakeHost:
    clock: float = 1_700_000_000.0
    settings: dict[str, str] = field(default_factory=dict)
    kv: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    logs: list[tuple[Level, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    #: program name -> a function from the request to its output (or raising Err)
    programs: dict[str, Callable[[process.RunRequest], process.RunOutput]] = field(default_factory=dict)
    #: set to make every kv call fail with `unavailable`
    kv_down: bool = False
    #: set to make spawn-job fail with this error
    spawn_error: process.ProcessError | None = None

    # -- what a test does to the jobs ------------------------------------
    def exit(self, job_id: str, code: int = 0, *, signal: int | None = None,
             cancelled: bool = False, timed_out: bool = False, wall: float = 1.0) -> None:
        job = self.jobs[job_id]
        job.state = process.JobState_Exited(process.JobUsage(
            exit_code=None if signal is not None else code, signal=signal,
            wall_time_seconds=wall, cpu_seconds=wall / 2, peak_rss_bytes=1 << 20,
            cancelled=cancelled, timed_out=timed_out))

    def lose(self, job_id: str, why: str = "the supervisor vanished") -> None:
        self.jobs[job_id].state = process.JobState_Lost(why)

    # -- Host ------------------------------------------------------------
    def now(self) -> float:
        return self.clock

    def setting(self, key: str) -> str | None:
        self.calls.append(f"setting {key}")
        return self.settings.get(key)

    def log(self, level: Level, message: str) -> None:
        self.logs.append((level, message))

    def run(self, req: process.RunRequest) -> process.RunOutput:
        self.calls.append(f"run {req.program} {' '.join(req.args)}")
        if req.program not in self.programs:
            raise Err(process.ProcessError_Denied(f"program `{req.program}` is not granted"))
        return self.programs[req.program](req)

    def spawn_job(self, req: process.JobRequest) -> None:
        self.calls.append(f"spawn-job {req.id}")
        if self.spawn_error is not None:
            raise Err(self.spawn_error)
        if req.id in self.jobs:
            raise Err(process.ProcessError_Invalid(f"job `{req.id}` exists"))
        self.jobs[req.id] = FakeJob(req, self.clock, process.JobState_Running(self.clock))

    def job_states(self, ids: list[str]) -> list[Ok[process.JobState] | Err[process.ProcessError]]:
        self.calls.append(f"job-states {len(ids)}")
        out: list[Ok[process.JobState] | Err[process.ProcessError]] = []
        for i in ids:
            job = self.jobs.get(i)
            out.append(Ok(job.state) if job else Err(process.ProcessError_NotFound(f"no job `{i}`")))
        return out

    def kill_job(self, job_id: str) -> bool:
        self.calls.append(f"kill-job {job_id}")
        job = self.jobs.get(job_id)
        if job is None:
            raise Err(process.ProcessError_NotFound(f"no job `{job_id}`"))
        if not isinstance(job.state, process.JobState_Running):
            return False
        self.exit(job_id, signal=15, cancelled=True, wall=self.clock - job.started)
        return True

    def read_job_log(self, job_id: str, which: process.LogStream, max_bytes: int) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            raise Err(process.ProcessError_NotFound(f"no job `{job_id}`"))
        text = job.stdout if which == process.LogStream.STDOUT else job.stderr
        return text.encode()[-max_bytes:].decode(errors="replace")

    def _kv(self) -> None:
        if self.kv_down:
            raise Err(kv.KvError_Unavailable("connection refused"))

    def kv_get(self, key: str) -> bytes | None:
        self._kv()
        return self.kv.get(key)

    def kv_get_many(self, keys: list[str]) -> list[bytes | None]:
        self._kv()
        self.calls.append(f"kv-get-many {len(keys)}")
        return [self.kv.get(k) for k in keys]

    def kv_set(self, key: str, value: bytes, ttl_seconds: int | None = None) -> None:
        self._kv()
        self.kv[key] = bytes(value)

    def kv_delete(self, key: str) -> bool:
        self._kv()
        return self.kv.pop(key, None) is not None

    def kv_list_keys(self, prefix: str) -> list[str]:
        self._kv()
        return sorted(k for k in self.kv if k.startswith(prefix))
