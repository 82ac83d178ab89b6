"""Snakemake's executor plugin ``hpc-host``: Snakemake's own test base for executor
plugins on the local backend and the real SLURM test cluster, a real workflow
whose resources reach the scheduler, and a run restarted after its Snakemake
was killed adopting the job still running instead of submitting it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Site

from snakemake.common.tests import TestWorkflowsLocalStorageBase
from snakemake_executor_plugin_hpc_host import ExecutorSettings, job_key, job_spec, resources_of


def settings_for(site: Site, backend: str) -> ExecutorSettings:
    return ExecutorSettings(
        backend=backend,
        socket=site.socket,
        environ=[f"{k}={v}" for k, v in site.environ.items()],
    )


class _Base(TestWorkflowsLocalStorageBase):
    """Snakemake's test base (``test_simple_workflow``, ``test_group_workflow``)."""

    __test__ = False
    backend = "local"

    @pytest.fixture(autouse=True)
    def _site(self, site: Site) -> None:
        if self.backend == "slurm":
            site.slurm()
        self.site = site

    def get_executor(self) -> str:
        return "hpc-host"

    def get_executor_settings(self) -> ExecutorSettings:
        return settings_for(self.site, self.backend)


class TestWorkflowsLocal(_Base):
    __test__ = True
    backend = "local"


class TestWorkflowsSlurm(_Base):
    __test__ = True
    backend = "slurm"


def fake_job(**resources: Any) -> Any:
    threads = resources.pop("threads", 1)
    container = resources.pop("container", None)
    return SimpleNamespace(
        name="align", jobid=7, is_group=lambda: False, resources=resources, threads=threads,
        output=["out/b.txt", "out/a.txt"], container_img_url=container,
    )


def test_resource_mapping() -> None:
    job = fake_job(threads=4, mem_mb=1536, runtime=90, gpu=1, slurm_account="ccat",
                   slurm_partition="debug", qos="normal", container="img/tool.sif")
    assert resources_of(job) == {"cpu": 4, "memory_gb": 1.5, "time_hours": 1.5, "gpus": 1,
                                 "account": "ccat", "qos": "normal"}
    spec = job_spec(job, "python -m snakemake --x", "/w d", {"A": "1"})
    assert spec.job_name == "smk.rule_align.7" and spec.sif_path == os.path.abspath("img/tool.sif")
    script = spec.execution_command[2]
    assert "cd '/w d' || exit 126\npython -m snakemake --x\n" in script
    assert script.startswith(f"export PATH={os.path.dirname(os.path.abspath(sys.executable))}:")
    assert spec.environment_variables["A"] == "1"
    # Snakemake deploying the container itself: the job is not wrapped again.
    assert job_spec(job, "x", "/w", {}, deploys_containers=True).sif_path is None
    assert job_spec(fake_job(container="docker://alpine"), "x", "/w", {}).image_ref == "docker://alpine"
    # cpus_per_task wins over threads; mem_mb_per_cpu scales with it.
    assert resources_of(fake_job(threads=2, cpus_per_task=3, mem_mb_per_cpu=1024)) == {"cpu": 3, "memory_gb": 3.0}
    # The key names the job by folder, rule and outputs (order-free), not by the run.
    other = fake_job()
    other.output = ["out/a.txt", "out/b.txt"]
    assert job_key("/w", job) == job_key("/w", other) != job_key("/v", other) != job_key("/w", other, 1)


SNAKEFILE = """
rule all:
    input: expand("out/{n}.txt", n=range(3))

rule work:
    output: "out/{n}.txt"
    threads: 2
    resources: mem_mb=1536, runtime=7
    shell: 'echo "${{SLURM_CPUS_PER_TASK:-}} ${{SLURM_MEM_PER_NODE:-}} ${{VIRTUAL_ENV:-}}" > {output}; command -v python >> {output}'
"""


def snakemake(site: Site, backend: str, workdir: Path, *extra: str, **kw: Any) -> subprocess.Popen[str]:
    s = settings_for(site, backend)
    args = [sys.executable, "-m", "snakemake", "--executor", "hpc-host", "--jobs", "10",
            "--hpc-host-backend", backend, "--hpc-host-socket", str(s.socket),
            "--hpc-host-environ", *(s.environ or []), "--latency-wait", "10",
            "--seconds-between-status-checks", "1", *extra]
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_workflow_resources_reach_the_job(site: Site, backend: str, tmp_path: Path) -> None:
    if backend == "slurm":
        site.slurm()
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    p = snakemake(site, backend, tmp_path)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-4000:]
    venv = sys.prefix if sys.prefix != sys.base_prefix else os.environ.get("VIRTUAL_ENV", "")
    python = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "python")
    for n in range(3):
        lines = (tmp_path / "out" / f"{n}.txt").read_text().splitlines()
        # The interpreter's folder leads the job's PATH, VIRTUAL_ENV is carried.
        assert lines[1] == python and lines[0].split()[-1] == venv, lines
        if backend == "slurm":
            # SLURM's own view: 2 CPUs, 1536 MB.
            assert lines[0].split()[:2] == ["2", "1536"], lines
    jobs = site.client(backend=backend).known_jobs()
    assert len(jobs) == 3 and all(j.status == "completed" for j in jobs), jobs


def test_restarted_run_adopts_running_job(site: Site, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        rule slow:
            output: "slow.txt"
            shell: "sleep 30; echo done > {output}"
    """))
    # The job outlives the restart: killing, unlocking and starting Snakemake
    # again took over 8 s on a loaded CI machine, and a job that had ended by
    # then left nothing to adopt.
    client = site.client(backend="local")
    first = snakemake(site, "local", tmp_path, start_new_session=True)
    deadline = time.monotonic() + 60
    while not [j for j in client.known_jobs() if j.status == "running"]:
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Snakemake dies (SIGKILL: no cancel); its job runs on under hpc-host.
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    [running] = client.known_jobs()
    assert running.status == "running"
    unlock = snakemake(site, "local", tmp_path, "--unlock")
    assert unlock.wait(60) == 0
    again = snakemake(site, "local", tmp_path, "--rerun-incomplete")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out[-4000:]
    assert f"is hpc-host job {running.job_id}" in out, out[-4000:]
    assert (tmp_path / "slow.txt").read_text() == "done\n"
    # One job in all: the restarted run did not submit another.
    jobs = client.known_jobs()
    assert [j.job_id for j in jobs] == [running.job_id] and jobs[0].status == "completed"
    # A run after that job ended submits a new one (the next key of the chain).
    (tmp_path / "slow.txt").unlink()
    third = snakemake(site, "local", tmp_path)
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0, out[-4000:]
    assert len(client.known_jobs()) == 2
