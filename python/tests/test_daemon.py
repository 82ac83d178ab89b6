"""The package over the real daemon: shared polling under concurrency, the
async client at scale, the autostart lock, and a daemon killed mid-call."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from conftest import Site, calls, counting

import hpc_host
from hpc_host import HPCJobInfo, Unavailable

#: The SLURM poll interval the concurrency test sets (s).
SLURM_INTERVAL = 2.0


def _poll_in_process(args: tuple[str, dict[str, str], list[str], float]) -> tuple[int, list[str]]:
    """One of the 4 processes: get_status on every job until the deadline."""
    sock, environ, ids, deadline = args
    backend = hpc_host.HpcHostBackend(socket=sock, environ=environ, autostart=False)
    asked, wrong = 0, []
    while time.time() < deadline:
        for job_id in ids:
            info = backend.get_status(job_id)
            asked += 1
            if info.job_id != job_id or info.status != "pending":
                wrong.append(f"{job_id}: {info}")
    return asked, wrong


def test_20_threads_and_4_processes_polling_100_slurm_jobs_cost_one_query_per_interval(
    site: Site,
) -> None:
    site.slurm()
    programs = (
        '{ sbatch = "/usr/bin/sbatch", scancel = "/usr/bin/scancel", '
        f'squeue = "{counting(site.home, "squeue")}", sacct = "{counting(site.home, "sacct")}" }}'
    )
    site.set("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", programs)
    site.set("CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM", str(SLURM_INTERVAL))
    backend = site.backend()
    # Held back an hour (`--begin`): pending, so they take no slot of the shared cluster.
    later = {"begin": "now+1hour"}
    ids = [
        backend.submit(["true"], resource_requirements=later, job_name=f"poll-{i}")
        for i in range(100)
    ]
    try:
        # Known to the daemon (submitted through it): from here on, only its poll asks SLURM.
        backend.get_statuses(ids)
        sq0, sa0 = calls(site.home, "squeue"), calls(site.home, "sacct")
        start = time.time()
        phase = 5 * SLURM_INTERVAL
        deadline = start + phase
        asked = [0] * 20
        wrong: list[str] = []

        def poll(n: int) -> None:
            while time.time() < deadline:
                for job_id in ids:
                    info = backend.get_status(job_id)
                    asked[n] += 1
                    if info.job_id != job_id or info.status != "pending":
                        wrong.append(f"{job_id}: {info}")

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(4) as pool:
            procs = pool.map_async(
                _poll_in_process, [(site.socket, site.environ, ids, deadline)] * 4
            )
            with ThreadPoolExecutor(20) as threads:
                # `.result()`: a thread's error fails the test.
                for done in [threads.submit(poll, n) for n in range(20)]:
                    done.result()
            results = procs.get(timeout=phase + 60)
        elapsed = time.time() - start
        sq, sa = calls(site.home, "squeue") - sq0, calls(site.home, "sacct") - sa0
        total = sum(asked) + sum(a for a, _ in results)
        wrong += [w for _, ws in results for w in ws]
        assert not wrong, wrong[:5]
        assert total >= 24 * 100, f"only {total} get_status calls"
        intervals = elapsed / SLURM_INTERVAL
        assert sq <= intervals + 2, f"{sq} squeue in {elapsed:.1f} s for {total} get_status"
        assert sa <= intervals + 2, f"{sa} sacct in {elapsed:.1f} s"
        print(f"{total} get_status in {elapsed:.1f} s: {sq} squeue, {sa} sacct")
    finally:
        for job_id in ids:
            backend.cancel(job_id)
    final = backend.wait(ids, timeout=180)
    assert all(i.status == "failed" and i.native_state == "CANCELLED" for i in final)


#: Threads sharing one client in the hammer test: more than httpx's 20
#: kept-alive connections, where httpcore's shared pool closed some in use.
HAMMER_THREADS = 32


@pytest.mark.parametrize("descheduled", [False, True], ids=["plain", "descheduled"])
def test_one_client_shared_by_many_threads_never_reports_a_live_daemon_gone(
    site: Site, monkeypatch: pytest.MonkeyPatch, descheduled: bool
) -> None:
    """32 threads call one ``Client`` as fast as they can for 6 s: every call
    answers. Issue 19: with one httpcore pool shared by the threads, a call
    now and then failed with `went away mid-call: [Errno 9] Bad file
    descriptor` (httpcore closed a connection it had just handed to another
    thread; see `_transport.ThreadPools`).

    ``descheduled`` widens that window as a loaded machine does: each thread
    pauses 1 ms between being handed a connection and using it. (It patches
    httpcore 1.0's pool; should httpcore rename it, this fails: look again.)
    Before the fix that failed every run (2 to 4 calls in 10 s, 20 threads).
    """
    if descheduled:
        from httpcore._sync import connection_pool

        handed = connection_pool.PoolRequest.wait_for_connection

        def pause(self: Any, timeout: float | None = None) -> Any:
            connection = handed(self, timeout)
            time.sleep(0.001)
            return connection

        monkeypatch.setattr(connection_pool.PoolRequest, "wait_for_connection", pause)
    client = site.client()
    ids = [client.submit(hpc_host.JobSpec(["true"], job_name=f"h{i}")) for i in range(4)]
    client.wait(ids, timeout=60)
    pid = client.health()["pid"]
    deadline = time.monotonic() + 6

    def hammer(n: int) -> int:
        calls = 0
        while time.monotonic() < deadline:
            job_id = ids[(n + calls) % len(ids)]
            if calls % 3 == 2:
                many = client.statuses(ids)
                assert [getattr(i, "job_id", None) for i in many] == ids, many
            else:
                info = client.status(job_id)
                assert (info.job_id, info.status) == (job_id, "completed"), info
            calls += 1
        return calls

    with ThreadPoolExecutor(HAMMER_THREADS) as threads:
        futures = [threads.submit(hammer, n) for n in range(HAMMER_THREADS)]
        # `.result()` raises a thread's error here: no error may pass unseen.
        calls = [f.result() for f in futures]
    assert min(calls) > 0, calls
    assert client.health()["pid"] == pid and site.daemons() == [pid]
    print(f"{sum(calls)} calls from {HAMMER_THREADS} threads, no error")
    client.close()


def test_async_client_1000_concurrent_status_calls(site: Site) -> None:
    async def main() -> list[HPCJobInfo]:
        async with site.aclient() as client:
            ids = [
                await client.submit(hpc_host.JobSpec(["sh", "-c", f"exit {i % 3}"]))
                for i in range(50)
            ]
            await client.wait(ids, timeout=60)
            asked = [ids[n % len(ids)] for n in range(1000)]
            results = await asyncio.gather(*(client.status(i) for i in asked))
            for job_id, info in zip(asked, results):
                want = "completed" if int(ids.index(job_id)) % 3 == 0 else "failed"
                assert (info.job_id, info.status) == (job_id, want), info
                assert info.exit_code == ids.index(job_id) % 3
            many = await client.statuses(ids)
            assert [getattr(i, "job_id", None) for i in many] == ids
            return list(results)

    start = time.monotonic()
    results = asyncio.run(main())
    assert len(results) == 1000
    assert len(site.daemons()) == 1
    print(f"1000 concurrent status calls (+ setup) in {time.monotonic() - start:.2f} s")


_RACE = """
import json, sys, time
import hpc_host
sock, environ, at = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
while time.time() < at:
    time.sleep(0.001)
h = hpc_host.Client(socket=sock, environ=environ).health()
print(h["pid"])
"""


def test_autostart_race_8_processes_make_one_daemon(site: Site) -> None:
    assert site.daemons() == []
    at = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, site.socket, json.dumps(site.environ), str(at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = {int(out.strip()) for out, _ in outs}
    assert len(pids) == 1, outs
    assert site.daemons() == list(pids)


def test_daemon_killed_mid_call_is_unavailable_then_autostart_recovers(site: Site) -> None:
    client = site.client()
    job = client.submit(hpc_host.JobSpec(["sleep", "30"]))
    first = client.health()["pid"]
    outcome: dict[str, Any] = {}

    def long_wait() -> None:
        try:
            outcome["value"] = client.wait([job], timeout=25)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome["error"] = e

    t = threading.Thread(target=long_wait)
    t.start()
    time.sleep(1.0)
    assert "value" not in outcome and "error" not in outcome, outcome
    os.kill(first, signal.SIGKILL)
    t.join(timeout=10)
    assert not t.is_alive(), "the call did not return when its daemon died"
    assert isinstance(outcome.get("error"), Unavailable), outcome
    assert outcome["error"].retryable
    # The next call starts a new daemon and works; the job survived.
    info = client.status(job)
    assert info.job_id == job and info.status == "running", info
    second = client.health()["pid"]
    assert second != first and site.daemons() == [second]
    client.cancel(job)


@pytest.mark.parametrize("n", [3])
def test_events_follow_a_job_that_runs_fails_and_one_cancelled(site: Site, n: int) -> None:
    client = site.client()
    fails = client.submit(hpc_host.JobSpec(["sh", "-c", "sleep 1; exit 2"]))
    sleeper = client.submit(hpc_host.JobSpec(["sleep", "60"]))
    seen: list[tuple[str, str | None, str]] = []
    for ev in client.events([fails, sleeper]):
        seen.append((ev.job_id, ev.previous, ev.info.status))
        if ev.job_id == fails and ev.info.is_final:
            client.cancel(sleeper)
    statuses = {j: [s for i, _, s in seen if i == j] for j in (fails, sleeper)}
    assert statuses[fails][-1] == "failed" and statuses[sleeper][-1] == "failed", seen
    assert "running" in statuses[sleeper], seen
    assert len(seen) >= n


def test_a_daemon_that_serves_other_settings_is_not_used(site: Site) -> None:
    """Same settings file, environment name and socket, one variable apart:
    the client sees the fingerprints differ (from `hpc-host serve --identify`)
    and goes through the CLI, with the settings it was given."""
    ours = site.client()
    pid = ours.health()["pid"]
    assert ours.transport == "daemon"
    ours.close()

    other_state = site.home / "other-state"
    other = hpc_host.Client(
        socket=site.socket,
        environ={**site.environ, "CCAT_WORKFLOW_MANAGER_HPC_STATE_DIR": str(other_state)},
    )
    with pytest.warns(UserWarning, match="not this client's settings"):
        job = other.submit({"execution_command": "true", "job_name": "elsewhere"})
    assert other.transport == "cli"
    # The job went where this client's settings say, not where the daemon's do.
    assert (other_state / "jobs" / "local" / job).is_dir()
    assert other.wait(job, timeout=30)[0].status == "completed"
    other.close()
    # The daemon was left alone, and a client with its settings still uses it.
    again = site.client()
    assert again.health()["pid"] == pid and again.transport == "daemon"
    again.close()


class OtherDaemon:
    """A stand-in daemon on the site's socket that serves other settings: it
    answers ``/v1/health`` with another fingerprint and records every request
    it gets (the probes a client makes)."""

    def __init__(self, sock: str) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Answer(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                requests.append(self.path)
                body = json.dumps(
                    {"status": "ok", "pid": 1, "fingerprint": "other-settings",
                     "settings_file": "/elsewhere/settings.toml", "env": "other"}
                ).encode()
                self.send_response(200 if self.path == "/v1/health" else 500)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self) -> str:
                return "unix"

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        os.makedirs(os.path.dirname(sock), mode=0o700, exist_ok=True)
        self.sock = sock
        self.server = Server(sock, Answer)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        os.unlink(self.sock)


def test_a_daemon_with_other_settings_is_asked_once_until_its_socket_changes(
    site: Site,
) -> None:
    """After a mismatch, calls go through the CLI without asking that daemon
    again: neither the client (it remembers) nor each CLI run (told
    `HPC_DAEMON=never`). A new socket file is looked at once; no socket file,
    and the client starts its own daemon."""
    other = OtherDaemon(site.socket)
    client = site.client()
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.warns(UserWarning, match="not this client's settings"):
        job = client.submit({"execution_command": "true"})
    assert client.transport == "cli"
    assert client.wait(job, timeout=30)[0].status == "completed"
    for _ in range(3):
        with pytest.raises(hpc_host.NotFound):
            client.status(unknown)
    # 6 calls, 6 CLI runs: one probe, the client's first.
    assert other.requests == ["/v1/health"], other.requests

    # Another daemon of other settings takes the socket: looked at once more.
    other.stop()
    time.sleep(0.05)  # a new file, whatever the clock's grain of its ctime
    again = OtherDaemon(site.socket)
    try:
        with pytest.warns(UserWarning, match="not this client's settings"):
            client.status(job)
        client.status(job)
        assert again.requests == ["/v1/health"], again.requests
    finally:
        again.stop()

    # Nobody on the socket: the client starts a daemon with its own settings.
    assert client.status(job).status == "completed"
    assert client.transport == "daemon"
    assert client.health()["pid"] in site.daemons()
    client.close()


def test_known_jobs_are_shared_by_every_client_of_the_daemon(site: Site) -> None:
    """`GET /v1/jobs`: what one client submitted, another lists (PSI/J's `list()`)."""
    one = site.client()
    ids = sorted(one.submit({"execution_command": "true", "job_name": f"k{i}"}) for i in range(3))
    one.wait(ids, timeout=30)
    other = site.client()
    assert [j.job_id for j in other.known_jobs()] == ids
    assert all(j.status == "completed" for j in other.known_jobs())
    assert site.client(transport="cli").known_jobs() == []
    one.close()
    other.close()
