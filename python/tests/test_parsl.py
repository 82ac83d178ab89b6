"""Parsl through ``HpcHostProvider``: a real HTEX workflow on the local backend
and the real SLURM test cluster, and Parsl's own python-app and bash-app tests
run with a config that uses the provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site, has_daemon

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.jobs.states import JobState

import hpc_host
from hpc_host.parsl import HpcHostProvider
from test_parsl_apps import greet, square

TRANSPORT = "daemon" if has_daemon() else "cli"
CONFIG = Path(__file__).with_name("parsl_hpc_host_config.py")


def provider(site: Site, backend: str, **kw: object) -> HpcHostProvider:
    """As a user moving from LocalProvider or SlurmProvider writes it: no `worker_init`."""
    if backend == "slurm":
        site.slurm()
    return HpcHostProvider(
        backend,
        socket=site.socket,
        environ=site.environ,
        transport=TRANSPORT,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsl starts `interchange.py` from PATH: the venv's scripts, as an activated venv has."""
    bindir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")


@pytest.fixture(params=["local", "slurm"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def test_provider_attributes(site: Site) -> None:
    p = provider(site, "local", init_blocks=2, min_blocks=1, max_blocks=3, nodes_per_block=1,
                 parallelism=0.5, cores_per_node=2, mem_per_node=1.5, walltime="1-02:00:00",
                 extra={"account": "ccat"})
    assert (p.init_blocks, p.min_blocks, p.max_blocks, p.nodes_per_block, p.parallelism) == (2, 1, 3, 1, 0.5)
    assert p.status_polling_interval > 0 and p.label == "hpc-host-local"
    assert p.resources == {} and p.cores_per_node == 2 and p.mem_per_node == 1.5
    spec = p.spec("echo hi", 1, "parsl.block 0")
    assert spec.resource_requirements == {"account": "ccat", "time_hours": 26.0, "cpu": 2, "memory_gb": 1.5}
    assert spec.environment_variables == {"PARSL_CORES": "2", "PARSL_MEMORY_GB": "1.5"}
    assert spec.job_name == "parsl.block_0"
    # The interpreter's folder leads PATH, before the user's worker_init (which may say otherwise).
    script = p.spec("echo hi", 1, "b").execution_command[2]
    assert script.startswith(f"export PATH={os.path.dirname(os.path.abspath(sys.executable))}:\"$PATH\"\n")
    withinit = HpcHostProvider("local", worker_init="export PATH=/opt/only").spec("w", 1, "b")
    assert withinit.execution_command[2].index("/opt/only") > withinit.execution_command[2].index("VIRTUAL_ENV" if sys.prefix != sys.base_prefix else "export PATH=")
    bare = HpcHostProvider("local", carry_interpreter=False).spec("w", 1, "b").execution_command[2]
    assert "export PATH" not in bare and "VIRTUAL_ENV" not in bare
    with pytest.raises(ValueError, match="walltime"):
        HpcHostProvider("local", walltime="two hours")


def test_worker_command_found_without_worker_init(site: Site) -> None:
    """Parsl's worker command is on the job's PATH only because the provider carries
    the interpreter's folder: without it the job's minimal PATH lacks it (exit 127)."""
    carried = provider(site, "local")
    bare = provider(site, "local", carry_interpreter=False)
    ok = carried.submit("exec process_worker_pool.py --help >/dev/null", 1, "parsl.found")
    missing = bare.submit("exec process_worker_pool.py --help >/dev/null", 1, "parsl.missing")
    deadline = time.monotonic() + 60
    while True:
        sts = carried.status([ok, missing])
        if all(st.terminal for st in sts):
            break
        assert time.monotonic() < deadline, [str(st) for st in sts]
        time.sleep(0.2)
    assert sts[0].state == JobState.COMPLETED, str(sts[0])
    assert sts[1].state == JobState.FAILED and sts[1].exit_code == 127, str(sts[1])


def test_provider_submit_status_cancel(site: Site, backend: str) -> None:
    p = provider(site, backend)
    done = p.submit("exit 0", 1, "parsl.ok")
    failed = p.submit("exit 4", 1, "parsl.fail")
    sleeper = p.submit("sleep 600", 1, "parsl.sleep")
    deadline = time.monotonic() + 180
    while True:
        sts = p.status([done, failed, sleeper])
        if sts[0].terminal and sts[1].terminal and sts[2].state == JobState.RUNNING:
            break
        assert time.monotonic() < deadline, [str(s) for s in sts]
        time.sleep(0.5)
    assert sts[0].state == JobState.COMPLETED
    assert sts[1].state == JobState.FAILED and sts[1].exit_code == 4
    assert p.cancel([sleeper, "no-such-block-1" if backend == "local" else "999999999"]) in ([True, False], [True, True])
    while p.status([sleeper])[0].state != JobState.CANCELLED:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert [s.state for s in p.status([])] == []


def test_htex_workflow(site: Site, backend: str, tmp_path: Path) -> None:
    # The workers unpickle the apps by reference to this module.
    here = {"PYTHONPATH": str(Path(__file__).parent)}
    p = provider(site, backend, init_blocks=1, min_blocks=0, max_blocks=1, status_polling_interval=1,
                 environment=here)
    cfg = Config(
        executors=[HighThroughputExecutor(label="hh", address="127.0.0.1", max_workers_per_node=2, provider=p)],
        run_dir=str(tmp_path / "runinfo"),
        strategy="none",
    )
    dfk = parsl.load(cfg)
    try:
        futures = [square(i) for i in range(5)]
        assert [f.result(timeout=240) for f in futures] == [0, 1, 4, 9, 16]
        out = tmp_path / "greet.out"
        assert greet("parsl", stdout=str(out)).result(timeout=240) == 0
        assert out.read_text() == "hello parsl\n"
        blocks = list(p.resources)
        assert len(blocks) == 1
        if backend == "slurm":
            assert blocks[0].isdigit()
    finally:
        dfk.cleanup()
    # Shutdown cancelled the block: the backend says so.
    client = hpc_host.Client(backend=backend, socket=site.socket, environ=site.environ, transport=TRANSPORT)
    info = client.wait(blocks, timeout=120)[0]
    assert info.status == "failed" and (info.native_state or "").startswith("CANCELLED"), info


#: Parsl's own tests run with the provider: its python-app and bash-app tests.
PARSL_SUITES = [
    "test_python_apps/test_basic.py",
    "test_python_apps/test_simple.py",
    "test_python_apps/test_fail.py",
    "test_bash_apps/test_basic.py",
    "test_bash_apps/test_error_codes.py",
]


def test_parsl_own_tests(site: Site, backend: str, tmp_path: Path) -> None:
    if backend == "slurm":
        site.slurm()
    env = dict(os.environ)
    env.update(
        HPC_HOST_PARSL_BACKEND=backend,
        HPC_HOST_PARSL_SOCKET=site.socket,
        HPC_HOST_PARSL_ENVIRON=json.dumps(site.environ),
        HPC_HOST_PARSL_TRANSPORT=TRANSPORT,
    )
    # As Parsl's Makefile runs them: the test files of the installed package
    # (so that its conftest adds `--config`), with our config file, in one
    # session (one DFK, one block).
    tests = Path(parsl.__file__).parent / "tests"
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", os.devnull,
         "--rootdir", str(tests), *(str(tests / s) for s in PARSL_SUITES), "--config", str(CONFIG)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    tail = (p.stdout + p.stderr)[-3000:]
    assert p.returncode == 0, tail
    summary = p.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 10 and "failed" not in summary and "error" not in summary, tail
