"""PSI/J's ``hpc-host`` executor on the local backend and the real SLURM test cluster.

Modelled on what PSI/J's executor tests exercise: a simple job, parallel
jobs, a failing job's exit code, a missing executable, environment variables,
standard streams at the given paths, cancel, ``wait`` with a timeout, attach
from a second executor instance and from another process, ``list()``, a
duration over one hour, memory and queue attributes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Site, has_daemon

import psij
from psij import Job, JobAttributes, JobExecutor, JobSpec, JobState, ResourceSpecV1

from hpc_host.psij import HpcHostExecutor, HpcHostExecutorConfig

BACKENDS = ["local", "slurm"]
#: Through the daemon's event stream once the binary has one (issue 8), else the CLI.
TRANSPORT = "daemon" if has_daemon() else "cli"
#: How long a job on the one-node test cluster may take.
LONG = timedelta(seconds=180)


class Env:
    """One test's site, backend and executor."""

    def __init__(self, site: Site, backend: str, tmp: Path) -> None:
        if backend == "slurm":
            site.slurm()
        self.site = site
        self.backend = backend
        self.tmp = tmp
        self.url = f"hpc-host://{backend}?transport={TRANSPORT}"
        self.states: list[tuple[str, JobState]] = []
        self.ex = self.executor()
        self.ex.set_job_status_callback(lambda job, st: self.states.append((job.id, st.state)))

    def config(self) -> HpcHostExecutorConfig:
        return HpcHostExecutorConfig(socket=self.site.socket, environ=self.site.environ)

    def executor(self) -> JobExecutor:
        return JobExecutor.get_instance("hpc-host", url=self.url, config=self.config())

    def job(self, executable: str, *args: str, **kw: object) -> Job:
        kw.setdefault("directory", str(self.tmp))
        return Job(JobSpec(executable=executable, arguments=list(args), **kw))  # type: ignore[arg-type]

    def run(self, job: Job, timeout: timedelta = LONG) -> psij.JobStatus:
        self.ex.submit(job)
        st = job.wait(timeout=timeout)
        assert st is not None, f"{job} did not end within {timeout}"
        return st

    def scontrol(self, native_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict: SLURM's own view (the test checks the
        adapter, not through it). sacct's records may be a restarted test
        cluster's older jobs with the same id."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", native_id], capture_output=True, text=True, check=True
        ).stdout
        return dict(w.split("=", 1) for w in out.split() if "=" in w)


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, site: Site, tmp_path: Path) -> Iterator[Env]:
    yield Env(site, request.param, tmp_path)


def test_descriptor_registers_the_executor() -> None:
    assert "hpc-host" in JobExecutor.get_executor_names()
    ex = JobExecutor.get_instance("hpc-host", url="hpc-host://local")
    # The class PSI/J loaded from the descriptor is the package's own class.
    assert type(ex) is HpcHostExecutor


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown `queue` in the executor URL"):
        JobExecutor.get_instance("hpc-host", url="hpc-host://slurm?queue=debug")


def test_simple_job(env: Env) -> None:
    out = env.tmp / "out.txt"
    job = env.job("/bin/echo", "hello", "psij", stdout_path=out)
    st = env.run(job)
    assert st.state == JobState.COMPLETED and st.exit_code == 0, st
    assert job.native_id is not None
    if env.backend == "slurm":
        assert job.native_id.isdigit()
    assert out.read_text() == "hello psij\n"
    mine = [s for jid, s in env.states if jid == job.id]
    assert mine == [JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED], mine


def test_parallel_jobs(env: Env) -> None:
    jobs = [env.job("/bin/sh", "-c", f"sleep 2; echo {i}", stdout_path=env.tmp / f"{i}.out") for i in range(6)]
    t0 = time.monotonic()
    for j in jobs:
        env.ex.submit(j)
    for j in jobs:
        st = j.wait(timeout=LONG)
        assert st is not None and st.state == JobState.COMPLETED, (j, st)
    for i in range(6):
        assert (env.tmp / f"{i}.out").read_text() == f"{i}\n"
    assert len({j.native_id for j in jobs}) == 6
    if env.backend == "local":
        # They ran side by side, not one after another.
        assert time.monotonic() - t0 < 6 * 2


def test_failing_job_has_its_exit_code(env: Env) -> None:
    st = env.run(env.job("/bin/sh", "-c", "exit 3"))
    assert st.state == JobState.FAILED and st.exit_code == 3, st


def test_missing_executable_fails(env: Env) -> None:
    err = env.tmp / "err.txt"
    st = env.run(env.job("/no/such/program", "x", stderr_path=err))
    assert st.state == JobState.FAILED and st.exit_code == 127, st
    assert "/no/such/program" in err.read_text()


def test_environment_variables(env: Env) -> None:
    out = env.tmp / "env.txt"
    job = env.job(
        "/bin/sh", "-c", 'printf "%s|%s|%s" "$GREETING" "$COUNT" "$QUOTED"',
        environment={"GREETING": "hello world", "COUNT": 7, "QUOTED": "it's \"$HOME\" `x`"},
        stdout_path=out,
    )
    assert env.run(job).state == JobState.COMPLETED
    assert out.read_text() == "hello world|7|it's \"$HOME\" `x`"


def test_interpreter_found_without_setup(env: Env) -> None:
    """A bare `python` is this interpreter (its folder leads the job's PATH) and
    VIRTUAL_ENV is carried, as PSI/J's own executors inherit them; a job whose
    environment names PATH keeps its own."""
    out = env.tmp / "prefix.txt"
    job = env.job("python", "-c", "import os, sys; print(sys.prefix, os.environ.get('VIRTUAL_ENV'))",
                  stdout_path=out)
    assert env.run(job).state == JobState.COMPLETED
    venv = sys.prefix if sys.prefix != sys.base_prefix else os.environ.get("VIRTUAL_ENV")
    assert out.read_text().split() == [sys.prefix, str(venv)]
    own = env.tmp / "own.txt"
    job = env.job("/bin/sh", "-c", 'echo "$PATH"', environment={"PATH": "/opt/x:/usr/bin:/bin"},
                  stdout_path=own)
    assert env.run(job).state == JobState.COMPLETED
    assert own.read_text() == "/opt/x:/usr/bin:/bin\n"


def test_streams_and_directory(env: Env) -> None:
    work = env.tmp / "a dir with spaces"
    work.mkdir()
    (work / "in.txt").write_text("from stdin\n")
    job = env.job(
        "/bin/sh", "-c", "pwd; cat; echo to-stderr >&2",
        directory=str(work), stdin_path=work / "in.txt",
        stdout_path=work / "o u t.txt", stderr_path=env.tmp / "err.txt",
    )
    assert env.run(job).state == JobState.COMPLETED
    assert (work / "o u t.txt").read_text() == f"{work}\nfrom stdin\n"
    assert (env.tmp / "err.txt").read_text() == "to-stderr\n"


def test_cancel_is_canceled(env: Env) -> None:
    job = env.job("/bin/sleep", "600")
    env.ex.submit(job)
    assert job.wait(timeout=LONG, target_states=[JobState.ACTIVE]) is not None
    job.cancel()
    st = job.wait(timeout=LONG)
    assert st is not None and st.state == JobState.CANCELED, st
    assert st.metadata and str(st.metadata["native_state"]).startswith("CANCELLED")


def test_wait_with_timeout(env: Env) -> None:
    job = env.job("/bin/sleep", "600")
    env.ex.submit(job)
    t0 = time.monotonic()
    assert job.wait(timeout=timedelta(seconds=1)) is None
    assert 0.9 < time.monotonic() - t0 < 10
    assert not job.status.final
    job.cancel()
    assert job.wait(timeout=LONG) is not None


def test_attach_from_second_executor(env: Env) -> None:
    job = env.job("/bin/sh", "-c", "sleep 3; exit 5")
    env.ex.submit(job)
    assert job.native_id is not None
    other = env.executor()
    assert other is not env.ex
    attached = Job()
    other.attach(attached, job.native_id)
    assert attached.native_id == job.native_id
    assert attached.status.state in (JobState.QUEUED, JobState.ACTIVE)
    st = attached.wait(timeout=LONG)
    assert st is not None and st.state == JobState.FAILED and st.exit_code == 5, st
    with pytest.raises(psij.InvalidJobException):
        other.attach(Job(), "no-such-job-4242" if env.backend == "local" else "999999999")


def test_attach_from_another_process(env: Env) -> None:
    job = env.job("/bin/sh", "-c", "sleep 2")
    env.ex.submit(job)
    script = textwrap.dedent(
        """
        import json, sys
        from datetime import timedelta
        from psij import Job, JobExecutor
        from hpc_host.psij import HpcHostExecutorConfig
        url, sock, environ, native = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
        ex = JobExecutor.get_instance("hpc-host", url=url,
                                      config=HpcHostExecutorConfig(socket=sock, environ=environ))
        job = Job()
        ex.attach(job, native)
        st = job.wait(timeout=timedelta(seconds=180))
        print(json.dumps([str(st.state), st.exit_code, native in ex.list()]))
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", script, env.url, env.site.socket, json.dumps(env.site.environ), str(job.native_id)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == ["COMPLETED", 0, True]


def test_list_has_this_and_other_executors_jobs(env: Env) -> None:
    mine = env.job("/bin/true")
    env.run(mine)
    other = env.executor()
    theirs = env.job("/bin/true")
    other.submit(theirs)
    assert theirs.wait(timeout=LONG) is not None
    listed = env.ex.list()
    assert mine.native_id in listed and theirs.native_id in listed, listed


def test_list_has_jobs_of_processes_that_are_gone(env: Env) -> None:
    """A process submits and exits; a later process lists its job (from the daemon)."""
    script = textwrap.dedent(
        """
        import json, sys
        from datetime import timedelta
        from psij import Job, JobExecutor, JobSpec
        from hpc_host.psij import HpcHostExecutorConfig
        url, sock, environ, what = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
        ex = JobExecutor.get_instance("hpc-host", url=url,
                                      config=HpcHostExecutorConfig(socket=sock, environ=environ))
        if what == "submit":
            job = Job(JobSpec(executable="/bin/true"))
            ex.submit(job)
            job.wait(timeout=timedelta(seconds=180))
            print(job.native_id)
        else:
            print(json.dumps(ex.list()))
        """
    )

    def run(what: str) -> str:
        p = subprocess.run(
            [sys.executable, "-c", script, env.url, env.site.socket, json.dumps(env.site.environ), what],
            capture_output=True, text=True, timeout=240, check=False,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().splitlines()[-1]

    native = run("submit")
    assert native in json.loads(run("list"))


def test_duration_over_one_hour(env: Env) -> None:
    job = env.job("/bin/true", attributes=JobAttributes(duration=timedelta(hours=2, minutes=30)))
    assert env.run(job).state == JobState.COMPLETED
    if env.backend == "slurm":
        assert env.scontrol(str(job.native_id))["TimeLimit"] == "02:30:00"


def test_memory_and_queue_attributes(env: Env) -> None:
    job = env.job(
        "/bin/true",
        resources=ResourceSpecV1(process_count=1, cpu_cores_per_process=1, memory=256 * 2**20),
        attributes=JobAttributes(queue_name="debug", duration=timedelta(minutes=5),
                                 custom_attributes={"slurm.comment": "from-psij", "pbs.x": "ignored"}),
    )
    assert env.run(job).state == JobState.COMPLETED
    if env.backend == "slurm":
        sc = env.scontrol(str(job.native_id))
        assert (sc["Partition"], sc["MinMemoryNode"], sc["NumCPUs"], sc["Comment"]) == (
            "debug", "256M", "1", "from-psij"), sc
        # The whole comment (scontrol's one-line form splits it at spaces): the
        # job's own, then the idempotency key the executor gave the submit
        # (the PSI/J job's id).
        comment = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", str(job.native_id), "-o", "%k"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert comment == f"from-psij hpc-host-key=psij-{job.id}", comment
        # The queue is really used: one that does not exist is refused by SLURM.
        bad = env.job("/bin/true", attributes=JobAttributes(queue_name="no-such-partition"))
        with pytest.raises((psij.SubmitException, psij.InvalidJobException), match="partition"):
            env.ex.submit(bad)
        assert bad.status.state == JobState.NEW


def test_slurm_refused_extra_is_invalid_job(site: Site, tmp_path: Path) -> None:
    # Only SLURM guards its extra keys (the local backend has none to guard).
    env = Env(site, "slurm", tmp_path)
    bad = env.job("/bin/true", attributes=JobAttributes(custom_attributes={"slurm.wrap": "rm -rf /"}))
    with pytest.raises(psij.InvalidJobException, match="wrap"):
        env.ex.submit(bad)


def test_package_import_before_psij() -> None:
    # Importing the package first must not make PSI/J's descriptor scan a circular import.
    code = (
        "from hpc_host.psij import HpcHostExecutor\n"
        "import psij\n"
        "ex = psij.JobExecutor.get_instance('hpc-host', url='hpc-host://local')\n"
        "assert type(ex) is HpcHostExecutor, type(ex)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
