"""Benchmarks of the Python package (figures in BENCHMARKS.md, "Python package").

    python python/bench/bench.py [--only latency,submits,poll] [--poll-seconds 60]

Runs in a throw-away HOME with its own daemon socket. With the package
installed (``pip install ./python``) it uses the installed ``hpc-host``;
``HPC_HOST_BIN`` names another one.

- latency: ``get_status`` of one local job, p50/p99, through the package
  (daemon socket) vs the README's former CLI snippet (one process per call).
- submits: 1,000 local submits from Python through the package.
- poll: the seed's per-job poll loop (``get_status`` of each of 200 SLURM jobs,
  one cycle a second) for ``--poll-seconds`` each way; scheduler queries per
  minute counted by wrapper programs in the policy. The jobs are held back with
  ``--begin`` so they take no slot of a shared cluster, and cancelled after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import hpc_host
from benchlib import counts, site_environ, wrappers


class CliSnippet:
    """The README's former "From Python" snippet: one CLI process per call."""

    ERRORS = {2: ValueError, 3: RuntimeError, 4: PermissionError}

    def __init__(self, exe: str, env: dict[str, str]) -> None:
        self.cmd = [exe, "--output", "json"]
        self.env = env

    def _run(self, *args: str, stdin: str | None = None) -> Any:
        p = subprocess.run(
            [*self.cmd, *args], input=stdin, capture_output=True, text=True, env=self.env
        )
        if p.returncode != 0:
            raise self.ERRORS.get(p.returncode, RuntimeError)(p.stderr.strip())
        return json.loads(p.stdout) if p.stdout.strip() else None

    def submit(self, **spec: Any) -> str:
        return str(self._run("submit", "--spec", "-", stdin=json.dumps(spec))["job_id"])

    def get_status(self, job_id: str) -> Any:
        return self._run("status", job_id)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Site:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="hh-bench-"))
        self.environ = site_environ(self.home)
        self.socket = self.environ["HPC_SOCKET"]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.environ, "CCAT_WORKFLOW_MANAGER_HPC_DAEMON": "never"}

    def backend(self) -> hpc_host.HpcHostBackend:
        return hpc_host.HpcHostBackend(socket=self.socket, environ=self.environ)

    def close(self) -> None:
        h = hpc_host._daemon.health(self.socket)
        if h:
            os.kill(int(h["pid"]), signal.SIGTERM)
        shutil.rmtree(self.home, ignore_errors=True)


def latency(n_pkg: int, n_cli: int) -> None:
    site = Site()
    try:
        b = site.backend()
        job = b.submit(["true"], job_name="lat")
        b.wait([job], timeout=30)
        cli = CliSnippet(hpc_host.find_binary(), site.env())
        for _ in range(20):  # warm both
            b.get_status(job)
        cli.get_status(job)
        pkg, raw = [], []
        for _ in range(n_pkg):
            t = time.perf_counter()
            b.get_status(job)
            pkg.append(time.perf_counter() - t)
        for _ in range(n_cli):
            t = time.perf_counter()
            cli.get_status(job)
            raw.append(time.perf_counter() - t)
        print("\n## get_status latency, local backend, one finished job")
        print("| path | calls | p50 | p99 | p50 ratio |")
        print("|---|---|---|---|---|")
        p50 = statistics.median(pkg)
        print(f"| package (daemon socket) | {n_pkg} | {p50*1e3:.3f} ms | {pct(pkg, 99)*1e3:.3f} ms | 1.0x |")
        c50 = statistics.median(raw)
        print(
            f"| README CLI snippet | {n_cli} | {c50*1e3:.3f} ms | {pct(raw, 99)*1e3:.3f} ms "
            f"| {c50/p50:.1f}x |"
        )
    finally:
        site.close()


def submits(n: int, n_cli: int) -> None:
    site = Site()
    try:
        b = site.backend()
        b.client.health()  # the daemon is up before the clock starts
        t = time.perf_counter()
        ids = [b.submit(["true"], job_name=f"s{i}") for i in range(n)]
        pkg = time.perf_counter() - t
        cli = CliSnippet(hpc_host.find_binary(), site.env())
        t = time.perf_counter()
        for i in range(n_cli):
            cli.submit(execution_command=["true"], job_name=f"c{i}")
        raw = time.perf_counter() - t
        b.wait(ids, timeout=120)
        print(f"\n## {n} local submits from Python")
        print("| path | submits | total | per submit |")
        print("|---|---|---|---|")
        print(f"| package (daemon socket) | {n} | {pkg:.2f} s | {pkg/n*1e3:.2f} ms |")
        print(f"| README CLI snippet | {n_cli} | {raw:.2f} s | {raw/n_cli*1e3:.2f} ms |")
    finally:
        site.close()


def poll(n_jobs: int, seconds: float) -> None:
    site = Site()
    try:
        d = site.home / "wrappers"
        wrappers(d)
        site.environ.update(site_environ(site.home, d))
        site.environ["CCAT_WORKFLOW_MANAGER_HPC_BACKEND"] = "slurm"
        b = site.backend()
        later = {"begin": "now+1hour"}
        ids = [b.submit(["true"], resource_requirements=later) for _ in range(n_jobs)]
        cli = CliSnippet(hpc_host.find_binary(), site.env())
        print(f"\n## the seed's per-job poll loop: {n_jobs} SLURM jobs, one cycle a second")
        print("| path | cycles | get_status calls | squeue/min | sacct/min | mean cycle |")
        print("|---|---|---|---|---|---|")
        for name, get in (("package (daemon)", b.get_status), ("README CLI snippet", cli.get_status)):
            c0 = counts(d)
            start = time.monotonic()
            cycles, n, spent = 0, 0, 0.0
            while time.monotonic() - start < seconds:
                c = time.monotonic()
                for job_id in ids:
                    get(job_id)
                    n += 1
                spent += time.monotonic() - c
                cycles += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - c)))
            minutes = (time.monotonic() - start) / 60
            c1 = counts(d)
            sq = (c1["squeue"] - c0["squeue"]) / minutes
            sa = (c1["sacct"] - c0["sacct"]) / minutes
            print(f"| {name} | {cycles} | {n} | {sq:.0f} | {sa:.0f} | {spent/cycles:.2f} s |")
        for job_id in ids:
            b.cancel(job_id)
    finally:
        site.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", default="latency,submits,poll")
    ap.add_argument("--poll-seconds", type=float, default=60.0)
    ap.add_argument("--poll-jobs", type=int, default=200)
    a = ap.parse_args()
    only = set(a.only.split(","))
    print(f"binary: {hpc_host.find_binary()}")
    if "latency" in only:
        latency(2000, 200)
    if "submits" in only:
        submits(1000, 200)
    if "poll" in only:
        poll(a.poll_jobs, a.poll_seconds)


if __name__ == "__main__":
    main()
