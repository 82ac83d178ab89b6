"""Snakemake and Dask on the SLURM test cluster: hpc-host next to the peers, in one run.

1. Snakemake: a workflow of N small jobs (``echo``) through
   ``--executor hpc-host --hpc-host-backend slurm`` and through
   ``--executor slurm`` (snakemake-executor-plugin-slurm), both with their
   default status intervals: wall time of the whole ``snakemake`` run and how
   often sbatch/squeue/sacct/scancel ran (wrapper programs first on ``PATH``,
   and as the hpc-host slurm plugin's ``programs``).
2. Dask: seconds from ``scale(4)`` until 4 workers are connected
   (2 jobs × 2 worker processes, 1 CPU each: the test node has 2),
   ``hpc_host.dask.HpcHostCluster(backend="slurm")`` vs
   ``dask_jobqueue.SLURMCluster``, then ``close()``.

Rounds alternate the two ways; the table has medians.

    python python/bench/workflows_bench.py [--jobs 100] [--rounds 3] [--only snakemake,dask]

Needs the package with the ``dask`` extra, snakemake-executor-plugin-hpc-host,
snakemake and snakemake-executor-plugin-slurm installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import PROGRAMS, counts, site_environ, stop_daemons, wrappers

SNAKEFILE = """
rule all:
    input: expand("out/{n}.txt", n=range(N))

rule small:
    output: "out/{n}.txt"
    resources: mem_mb=200, runtime=5
    shell: "echo {wildcards.n} > {output}"
"""


def snakemake_run(way: str, n: int, root: Path) -> tuple[float, dict[str, int]]:
    work = Path(tempfile.mkdtemp(dir=root, prefix=f"smk-{way}-"))
    d = work / "wrappers"
    wrappers(d)
    (work / "Snakefile").write_text(SNAKEFILE.replace("range(N)", f"range({n})"))
    env = dict(os.environ)
    env["PATH"] = f"{d}:{os.path.dirname(os.path.abspath(sys.executable))}:{env.get('PATH', '')}"
    args = [sys.executable, "-m", "snakemake", "--jobs", str(n), "--latency-wait", "30",
            "--quiet", "rules"]
    home = work / "home"
    if way == "hpc-host":
        environ = site_environ(home, d)
        args += ["--executor", "hpc-host", "--hpc-host-backend", "slurm",
                 "--hpc-host-socket", environ["HPC_SOCKET"],
                 "--hpc-host-environ", *(f"{k}={v}" for k, v in environ.items())]
    else:
        args += ["--executor", "slurm", "--default-resources", "slurm_partition=debug"]
    t0 = time.monotonic()
    p = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, check=False)
    secs = time.monotonic() - t0
    if way == "hpc-host":
        stop_daemons(str(home / "run" / "hpc-host.sock"))
    if p.returncode != 0 or len(list((work / "out").glob("*.txt"))) != n:
        raise SystemExit(f"snakemake ({way}) failed:\n{(p.stdout + p.stderr)[-4000:]}")
    return secs, counts(d)


def dask_run(way: str, root: Path) -> tuple[float, dict[str, int]]:
    from dask.distributed import Client

    work = Path(tempfile.mkdtemp(dir=root, prefix=f"dask-{way}-"))
    d = work / "wrappers"
    wrappers(d)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{d}:{old_path}"
    kw: dict[str, Any] = dict(cores=2, processes=2, memory="1GiB", walltime="00:10:00",
                              job_cpu=1, scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
    home = work / "home"
    try:
        if way == "hpc-host":
            from hpc_host.dask import HpcHostCluster

            environ = site_environ(home, d)
            cluster = HpcHostCluster(backend="slurm", socket=environ["HPC_SOCKET"], environ=environ, **kw)
            # The daemon is up before the clock starts (as for a user whose
            # daemon already runs): what is timed is the workers' start.
            from hpc_host import Client as HH

            HH(socket=environ["HPC_SOCKET"], environ=environ, backend="slurm").health()
        else:
            from dask_jobqueue import SLURMCluster

            cluster = SLURMCluster(queue="debug", log_directory=str(work / "logs"), **kw)
        with Client(cluster) as client:
            t0 = time.monotonic()
            cluster.scale(4)
            client.wait_for_workers(4, timeout=300)
            secs = time.monotonic() - t0
        cluster.close()
        return secs, counts(d)
    finally:
        os.environ["PATH"] = old_path
        if way == "hpc-host":
            stop_daemons(str(home / "run" / "hpc-host.sock"))


def table(title: str, unit: str, rows: dict[str, list[tuple[float, dict[str, int]]]]) -> None:
    med = {w: statistics.median(s for s, _ in r) for w, r in rows.items()}
    base = med.get("peer")
    print(f"\n| {title} | median {unit} | all rounds | sbatch | squeue | sacct | scancel | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for way, r in rows.items():
        c = {p: statistics.median(x[1][p] for x in r) for p in PROGRAMS}
        ratio = "" if base is None or way == "peer" else f"{base / med[way]:.2f}x faster" if med[way] < base else f"{med[way] / base:.2f}x slower"
        print(f"| {LABELS[title][way]} | {med[way]:.2f} s | {', '.join(f'{s:.1f}' for s, _ in r)} "
              f"| {c['sbatch']:g} | {c['squeue']:g} | {c['sacct']:g} | {c['scancel']:g} | {ratio} |")


LABELS = {
    "snakemake": {"hpc-host": "`--executor hpc-host` (slurm backend)", "peer": "`--executor slurm` (snakemake-executor-plugin-slurm)"},
    "dask": {"hpc-host": "`hpc_host.dask.HpcHostCluster`", "peer": "`dask_jobqueue.SLURMCluster`"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="snakemake,dask")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hh-wfbench-"))
    try:
        for what in a.only.split(","):
            rows: dict[str, list[tuple[float, dict[str, int]]]] = {"hpc-host": [], "peer": []}
            for i in range(a.rounds):
                for way in (("hpc-host", "peer") if i % 2 == 0 else ("peer", "hpc-host")):
                    r = snakemake_run(way, a.jobs, root) if what == "snakemake" else dask_run(way, root)
                    rows[way].append(r)
                    print(f"{what} {way} round {i}: {r[0]:.2f} s {r[1]}", file=sys.stderr, flush=True)
            table(what, "wall time" if what == "snakemake" else "to 4 workers", rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
