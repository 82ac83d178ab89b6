"""The backend's contract promises, against the fake host (no wasm)."""

from __future__ import annotations

import json
import uuid

import pytest
from componentize_py_types import Err, Ok
from wit_world.imports import process
from wit_world.imports.ccat_hpc_types_0_1_0 import (
    BackendError_InvalidRequest,
    BackendError_NotFound,
    BackendError_Unavailable,
    JobStatus,
    ResourceRequirements,
)
from wit_world.imports.ccat_hpc_types_0_2_0 import JobSpec

import backend
from hpc_plugin import ids
from hpc_plugin.errors import BackendFailure
from hpc_plugin.fake import FakeHost
from hpc_plugin.host import NOT_STARTED


def spec(*argv: str, key: str | None = None, hours: float | None = None,
         sif: str | None = None, env: list[tuple[str, str]] | None = None) -> JobSpec:
    return JobSpec(
        execution_command=list(argv), image_ref=None, sif_path=sif, input_dir="/in",
        output_dir=None, workspace_dir=None, manifest_path=None,
        resource_requirements=ResourceRequirements(cpu=None, memory_gb=None, time_hours=hours,
                                                   gpus=None, nodes=None, extra=[]),
        environment_variables=env or [], job_name="t", idempotency_key=key)


def error_of(call) -> object:
    with pytest.raises(BackendFailure) as e:
        call()
    return e.value.error


def test_submit_runs_the_command_and_keeps_a_record() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("echo", "hi", env=[("A", "1")]))
    assert uuid.UUID(job)
    assert h.jobs[job].req.argv == ["echo", "hi"]
    assert h.jobs[job].req.env == [("A", "1")]
    assert json.loads(h.kv[f"job/{job}"])["argv"] == ["echo", "hi"]
    assert backend.get_status(h, job).status == JobStatus.RUNNING


def test_ends_are_reported_with_metrics_and_reasons() -> None:
    h = FakeHost()
    ok, bad = backend.submit(h, spec("true")), backend.submit(h, spec("false"))
    h.exit(ok, 0, wall=2.0)
    h.exit(bad, 3)
    [a, b] = backend.get_statuses(h, [ok, bad])
    assert isinstance(a, Ok) and a.value.status == JobStatus.COMPLETED and a.value.exit_code == 0
    assert a.value.wall_time_seconds == 2.0 and a.value.cpu_hours == pytest.approx(1 / 3600)
    assert isinstance(b, Ok) and b.value.status == JobStatus.FAILED and b.value.exit_code == 3
    assert b.value.reason == "exit code 3"


def test_statuses_keep_order_with_per_id_errors() -> None:
    h = FakeHost()
    a, b = backend.submit(h, spec("a")), backend.submit(h, spec("b"))
    unknown = str(uuid.uuid4())
    out = backend.get_statuses(h, [b, "nonsense", a, unknown])
    assert [type(r) for r in out] == [Ok, Err, Ok, Err]
    assert out[0].value.job_id == b and out[2].value.job_id == a
    assert isinstance(out[1].value, BackendError_NotFound)
    assert isinstance(out[3].value, BackendError_NotFound)
    assert h.calls.count("kv-get-many 3") == 1  # one store round trip for the valid ids


def test_unknown_ids_are_not_found_everywhere() -> None:
    h = FakeHost()
    for bad in ["", "x", str(uuid.uuid4()), "../../etc"]:
        for call in (backend.get_status, backend.cancel, backend.get_logs):
            assert isinstance(error_of(lambda: call(h, bad)), BackendError_NotFound), (call, bad)


def test_cancel_stops_a_running_job_and_an_ended_one_is_no_error() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("sleep", "100"))
    backend.cancel(h, job)
    info = backend.get_status(h, job)
    assert info.status == JobStatus.FAILED and info.native_state == "CANCELLED"
    kills = h.calls.count(f"kill-job {job}")
    backend.cancel(h, job)  # ended: no error, no second kill
    assert h.calls.count(f"kill-job {job}") == kills
    assert backend.get_status(h, job).native_state == "CANCELLED"


def test_time_limit_is_passed_and_reported_with_a_reason() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("sleep", "100", hours=1.5))
    assert h.jobs[job].req.time_limit_seconds == 5400
    h.exit(job, signal=15, timed_out=True)
    info = backend.get_status(h, job)
    assert (info.status, info.native_state, info.reason) == (JobStatus.FAILED, "TIMEOUT", "time limit reached")


def test_states_never_go_backwards() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("x"))
    h.exit(job, 0)
    assert backend.get_status(h, job).status == JobStatus.COMPLETED
    # The supervisor now says something else (a reused folder): the recorded end stands.
    h.jobs[job].state = process.JobState_Running(h.clock)
    assert backend.get_status(h, job).status == JobStatus.COMPLETED
    h.jobs.pop(job)
    assert backend.get_status(h, job).status == JobStatus.COMPLETED


def test_keyed_submit_makes_one_job_and_find_job_finds_it() -> None:
    h = FakeHost()
    assert backend.find_job(h, "run-1", 0.0) is None
    first = backend.submit(h, spec("x", key="run-1"))
    assert first == ids.keyed_id("run-1")
    assert backend.submit(h, spec("x", key="run-1")) == first
    assert len(h.jobs) == 1
    assert backend.find_job(h, "run-1", 0.0) == first
    assert backend.find_job(h, "run-2", 0.0) is None
    h.exit(first, 0)
    assert backend.find_job(h, "run-1", 0.0) == first  # finished jobs are found too


def test_a_record_whose_job_never_started_is_not_a_job() -> None:
    h = FakeHost()
    job = ids.keyed_id("k")
    h.kv[f"job/{job}"] = b'{"job_id": "%s", "outcome": null}' % job.encode()
    assert backend.find_job(h, "k", 0.0) is None
    assert f"job/{job}" not in h.kv


def test_invalid_specs_are_invalid_request() -> None:
    h = FakeHost()
    for bad in [spec(), spec(""), spec("a\0b"), spec("x", hours=0), spec("x", hours=float("nan")),
                spec("x", hours=-1), spec("x", env=[("A=B", "1")]), spec("x", sif="rel.sif")]:
        assert isinstance(error_of(lambda: backend.submit(h, bad)), BackendError_InvalidRequest)
    assert h.jobs == {} and h.kv == {}


def test_sif_path_runs_under_apptainer() -> None:
    h = FakeHost(settings={"HPC_APPTAINER": "/opt/apptainer"})
    job = backend.submit(h, spec("python", "x.py", sif="/img/a.sif", env=[("A", "1")]))
    assert h.jobs[job].req.argv == ["/opt/apptainer", "exec", "--bind", "/in", "/img/a.sif",
                                    "python", "x.py"]
    assert ("APPTAINERENV_A", "1") in h.jobs[job].req.env


def test_store_down_is_unavailable_and_nothing_starts() -> None:
    h = FakeHost(kv_down=True)
    from hpc_plugin.errors import to_backend_error
    with pytest.raises(Err) as e:
        backend.submit(h, spec("x"))
    assert isinstance(to_backend_error(e.value), BackendError_Unavailable)
    assert h.jobs == {}


def test_spawn_failure_leaves_no_record() -> None:
    h = FakeHost(spawn_error=process.ProcessError_Invalid("no such program `nope`"))
    assert isinstance(error_of(lambda: backend.submit(h, spec("nope"))), BackendError_InvalidRequest)
    assert h.kv == {}


def test_logs_and_a_lost_supervisor() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("x"))
    h.jobs[job].stdout, h.jobs[job].stderr = "out\n", "err\n"
    logs = backend.get_logs(h, job)
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    h.lose(job, "machine rebooted")
    info = backend.get_status(h, job)
    assert (info.status, info.native_state, info.reason) == (JobStatus.FAILED, "LOST", "machine rebooted")


def test_a_job_the_store_lost_is_found_again() -> None:
    h = FakeHost()
    job = backend.submit(h, spec("x"))
    h.kv.clear()
    assert backend.get_status(h, job).status == JobStatus.RUNNING
    assert f"job/{job}" in h.kv


def test_describe_names_the_settings_it_reads() -> None:
    info = backend.describe()
    assert info.name == backend.NAME and info.settings == ["HPC_APPTAINER"]


def test_submit_many_answers_each_spec_and_refuses_only_the_bad_one() -> None:
    h = FakeHost()
    [a, bad, b] = backend.submit_many(h, [spec("echo", "a"), spec(), spec("echo", "b", key="k-b")])
    assert isinstance(a, Ok) and isinstance(b, Ok) and a.value != b.value
    assert isinstance(bad, Err) and isinstance(bad.value, BackendError_InvalidRequest)
    assert h.jobs[a.value].req.argv == ["echo", "a"]
    assert h.jobs[b.value].req.argv == ["echo", "b"]
    assert backend.find_job(h, "k-b", 0.0) == b.value


def test_a_job_waiting_for_a_slot_is_pending_with_the_reason_then_running() -> None:
    """The host answers `running(NOT_STARTED)` for a job accepted but
    waiting for a free slot (`max_running_jobs`): pending, with the reason."""
    h = FakeHost()
    job = backend.submit(h, spec("true"))
    h.jobs[job].state = process.JobState_Running(NOT_STARTED)
    s = backend.get_status(h, job)
    assert (s.status, s.native_state, s.reason) == (
        JobStatus.PENDING, "PENDING", backend.WAITING_REASON)
    assert s.wall_time_seconds is None
    # A store that lost the record still finds the job, and records no
    # start time of infinity for it.
    h.kv.clear()
    assert backend.get_status(h, job).status == JobStatus.PENDING
    assert b"Infinity" not in h.kv.get(f"job/{job}", b"")
    h.jobs[job].state = process.JobState_Running(h.clock)
    s = backend.get_status(h, job)
    assert (s.status, s.reason) == (JobStatus.RUNNING, None)
    assert json.loads(h.kv[f"job/{job}"])["submitted_at"] == h.clock
