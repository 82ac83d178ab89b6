"""The drop-in ``HpcHostBackend`` through submit → status → logs → cancel,
on the local backend and on the real SLURM test cluster, over the daemon and
through the CLI."""

from __future__ import annotations

import time

import pytest
from conftest import TRANSPORTS, Site

import hpc_host
from hpc_host import HPCJobInfo, HpcHostBackend


def until(backend: HpcHostBackend, job_id: str, pred: object, timeout: float = 120) -> HPCJobInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = backend.get_status(job_id)
        if callable(pred) and pred(info):
            return info
        assert time.monotonic() < deadline, f"job {job_id} stuck at {info}"
        time.sleep(0.1)


def seed_call(backend: HpcHostBackend, command: object, workspace: str | None = None) -> str:
    # Exactly the seed's positional order.
    return backend.submit(
        command,  # type: ignore[arg-type]
        None,
        None,
        None,
        None,
        workspace,
        None,
        {"cpu": 1, "memory_gb": 0.5, "time_hours": 0.1},
        {"GREETING": "hello from python"},
        "py-dropin",
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_local_dropin_submit_status_logs_cancel(site: Site, transport: str) -> None:
    backend = site.backend(transport=transport)
    job = seed_call(backend, ["sh", "-c", 'echo "$GREETING"; echo oops >&2; exit 3'])
    info = until(backend, job, lambda i: i.is_final)
    assert info.job_id == job
    assert (info.status, info.exit_code) == ("failed", 3), info
    assert info.wall_time_seconds is not None and info.wall_time_seconds >= 0
    assert backend.get_logs(job) == "hello from python\noops\n"
    assert [i.status for i in backend.get_statuses([job, job])] == ["failed", "failed"]

    running = backend.submit(["sleep", "60"], job_name="sleeper")
    until(backend, running, lambda i: i.status == "running", 30)
    backend.cancel(running)
    done = backend.wait([running], timeout=30)
    assert done[0].status == "failed" and done[0].native_state == "CANCELLED", done
    # Cancelling an ended job is not an error.
    backend.cancel(running)
    # A one-string command runs under /bin/sh -c.
    shell = backend.submit("echo $((6 * 7))")
    assert backend.wait([shell], timeout=30)[0].status == "completed"
    assert backend.get_logs(shell) == "42\n"
    if transport == "daemon":
        assert backend.client.transport == "daemon"
        assert backend.client.health()["pid"] in site.daemons()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_slurm_dropin_submit_status_logs_cancel(site: Site, transport: str) -> None:
    site.slurm()
    backend = site.backend(transport=transport)
    job = seed_call(backend, ["sh", "-c", 'echo "$GREETING"; echo warn >&2'])
    assert job.isdigit(), job
    info = backend.wait([job], timeout=180)[0]
    assert info.status == "completed" and info.exit_code == 0, info
    assert info.native_state == "COMPLETED"
    assert backend.get_status(job).status == "completed"
    assert backend.get_logs(job) == "hello from python\nwarn\n"

    running = backend.submit(["sleep", "120"], job_name="py-sleeper")
    until(backend, running, lambda i: i.status in ("running", "pending"), 60)
    backend.cancel(running)
    done = backend.wait([running], timeout=180)[0]
    assert done.status == "failed" and done.native_state == "CANCELLED", done
    assert "cancelled" in (done.reason or ""), done


def test_client_status_many_and_events(site: Site) -> None:
    client = site.client()
    ok = client.submit(hpc_host.JobSpec(["sh", "-c", "sleep 0.5; echo fine"], job_name="ev"))
    bad = client.submit(hpc_host.JobSpec(["sh", "-c", "sleep 0.5; exit 7"]))
    unknown = "00000000-0000-4000-8000-000000000000"
    results = client.statuses([ok, unknown, bad])
    assert isinstance(results[0], HPCJobInfo) and results[0].job_id == ok
    assert isinstance(results[1], hpc_host.NotFound), results[1]
    assert isinstance(results[2], HPCJobInfo) and results[2].job_id == bad
    seen: dict[str, list[str]] = {ok: [], bad: []}
    for ev in client.events([ok, bad]):
        seen[ev.job_id].append(ev.info.status)
    assert seen[ok][-1] == "completed" and seen[bad][-1] == "failed", seen
    assert client.logs(ok) == hpc_host.JobLogs("fine\n", "")
    names = [p.get("name") for p in client.plugins()]
    assert {"local", "slurm", "kubernetes"} <= set(names), names


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_idempotency_key_makes_one_job_however_often_it_is_submitted(
    site: Site, transport: str
) -> None:
    backend = site.backend(transport=transport)
    first = backend.submit(["sh", "-c", "echo once"], idempotency_key="wm-exec-17")
    # The seed's signature is unchanged: the key is a keyword with a default.
    again = backend.submit(["sh", "-c", "echo once"], idempotency_key="wm-exec-17")
    assert again == first
    assert backend.client.submit(
        hpc_host.JobSpec(execution_command=["true"], idempotency_key="wm-exec-17")
    ) == first
    assert backend.wait([first], timeout=30)[0].status == "completed"
    assert backend.get_logs(first) == "once\n"
    # Long after it ended: still that job, not a new one.
    assert backend.submit(["sh", "-c", "echo once"], idempotency_key="wm-exec-17") == first
    assert backend.submit(["true"], idempotency_key="wm-exec-18") != first
    jobs = site.home / ".local/state/hpc-host/jobs/local"

    def job_folders() -> int:  # `.slots` holds the running-jobs bound's locks, not a job
        return len([p for p in jobs.iterdir() if p.is_dir() and not p.name.startswith(".")])

    assert job_folders() == 2
    # Asking makes nothing: the id, or None for a key never used.
    assert backend.client.find_job("wm-exec-17") == first
    assert backend.client.find_job("wm-exec-never") is None
    assert job_folders() == 2
    with pytest.raises(hpc_host.InvalidRequest):
        backend.submit(["true"], idempotency_key="not a key")
    with pytest.raises(ValueError):
        backend.client.submit(
            hpc_host.JobSpec(execution_command=["true"], idempotency_key="a"),
            idempotency_key="b",
        )


def test_the_async_client_passes_the_key(site: Site) -> None:
    import asyncio

    async def go() -> tuple[str, str]:
        async with site.aclient() as c:
            a = await c.submit({"execution_command": ["true"]}, idempotency_key="wm-async-1")
            b = await c.submit({"execution_command": ["true"]}, idempotency_key="wm-async-1")
            assert await c.find_job("wm-async-1") == a
            return a, b

    a, b = asyncio.run(go())
    assert a == b
