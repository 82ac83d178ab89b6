"""``hpc_host.dask.HpcHostCluster``: Dask workers as hpc-host jobs on the local
backend and the real SLURM test cluster (scale, compute, adapt, close)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site

from dask.distributed import Client as DaskClient

from dask_tasks import square, where
from hpc_host.dask import HpcHostCluster


def cluster(site: Site, backend: str, **kw: object) -> HpcHostCluster:
    if backend == "slurm":
        site.slurm()
    kw.setdefault("cores", 1)
    kw.setdefault("memory", "512MiB")
    # The workers unpickle dask_tasks' functions by reference.
    kw.setdefault("environment", {"PYTHONPATH": str(Path(__file__).parent)})
    return HpcHostCluster(
        backend=backend,
        socket=site.socket,
        environ=site.environ,
        walltime="00:10:00",
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
        **kw,
    )


@pytest.fixture(params=["local", "slurm"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def test_options_become_the_job_spec(site: Site) -> None:
    with cluster(site, "local", cores=4, memory="3GiB", processes=2,
                 job_extra={"account": "ccat"}, job_script_prologue=["echo start"]) as c:
        job = c._dummy_job
        spec = job.spec()
        assert spec.resource_requirements == {"account": "ccat", "cpu": 4, "memory_gb": 3.0,
                                              "time_hours": 1 / 6}
        script = spec.execution_command[2]
        assert script.startswith(f"export PATH={os.path.dirname(os.path.abspath(sys.executable))}:")
        assert "echo start\nexec " in script and "--nworkers 2" in script and "--nthreads 2" in script
        assert "sbatch" not in c.job_script()
    with cluster(site, "local", job_extra=["--qos=low", "constraint=x"], job_cpu=2, job_mem="1GB") as c:
        res = c._dummy_job.spec().resource_requirements
        assert res["qos"] == "low" and res["constraint"] == "x" and res["cpu"] == 2
        assert res["memory_gb"] == pytest.approx(954 / 1024)
    with pytest.raises(ValueError, match="walltime"):
        HpcHostCluster(cores=1, memory="1GB", walltime="ten minutes")


def test_scale_compute_close(site: Site, backend: str) -> None:
    hh = site.client(backend=backend)
    c = cluster(site, backend, cores=2, processes=2, job_cpu=1)
    try:
        c.scale(4)  # 4 workers: 2 jobs of 2 processes
        with DaskClient(c) as dc:
            dc.wait_for_workers(4, timeout=240)
            squares = [f.result(timeout=120) for f in dc.map(square, range(100))]
            assert sum(squares) == sum(i * i for i in range(100))
            seen = set(dc.run(where).values())
            bindir = os.path.dirname(os.path.abspath(sys.executable))
            venv = sys.prefix if sys.prefix != sys.base_prefix else os.environ.get("VIRTUAL_ENV")
            assert {(p, b, v) for p, b, v in seen} == {(sys.executable, bindir, venv)}, seen
            jobs = [j for j in hh.known_jobs() if not j.is_final]
            assert len(jobs) == 2, jobs
            if backend == "slurm":
                assert all(str(j.job_id).isdigit() for j in jobs)
            c.scale(2)  # one job goes
            deadline = time.monotonic() + 120
            while len(dc.scheduler_info()["workers"]) != 2:
                assert time.monotonic() < deadline, dc.scheduler_info()["workers"].keys()
                time.sleep(0.5)
            assert dc.submit(square, 12).result(timeout=60) == 144
    finally:
        c.close()
    # close cancelled every worker job: the backend says so.
    ids = [str(j.job_id) for j in jobs]
    done = hh.wait(ids, timeout=120)
    assert all(i.status == "failed" and (i.native_state or "").upper().startswith("CANCEL") for i in done), done


def test_adapt(site: Site) -> None:
    hh = site.client(backend="local")
    with cluster(site, "local") as c:
        c.adapt(minimum=1, maximum=2, interval="500ms")
        with DaskClient(c) as dc:
            dc.wait_for_workers(1, timeout=120)
            assert dc.submit(square, 9).result(timeout=60) == 81
            assert 1 <= len([j for j in hh.known_jobs() if not j.is_final]) <= 2
    # All the adaptive jobs were cancelled at close.
    jobs = hh.known_jobs()
    assert jobs and all(j.is_final for j in hh.wait([str(j.job_id) for j in jobs], timeout=60))
