"""20 trivial SLURM jobs three ways, side by side in one run:

1. raw: ``sbatch --wrap=true`` × 20, then one ``sacct`` for all ids every second;
2. PSI/J's own ``slurm`` executor;
3. PSI/J's ``hpc-host`` executor (the daemon's event stream when the binary has
   one, else its CLI fallback, one batched status per second).

For each: seconds from the last submit until every job is known final, and
how often sbatch/squeue/sacct/scancel ran (counting wrappers first on PATH,
and as the hpc-host slurm plugin's programs).

    python bench/psij_bench.py [N]      # needs psij-python and the installed package
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benchlib import counts, site_environ, stop_daemons, wrappers

def raw(n: int, d: Path) -> tuple[float, float, dict[str, int]]:
    ids = []
    first = time.monotonic()
    for _ in range(n):
        p = subprocess.run(
            [str(d / "sbatch"), "--parsable", "-p", "debug", "-o", "/dev/null", "--wrap=true"],
            capture_output=True, text=True, check=True,
        )
        ids.append(p.stdout.strip().split(";")[0])
    t0 = time.monotonic()
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
    while True:
        out = subprocess.run(
            [str(d / "sacct"), "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
            capture_output=True, text=True, check=True,
        ).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
        if all(states.get(i, "").split(" ")[0] in final for i in ids):
            return time.monotonic() - t0, time.monotonic() - first, counts(d)
        time.sleep(1.0)


def psij_run(
    n: int, d: Path, name: str, url: str | None, config: object
) -> tuple[float, float, dict[str, int]]:
    from psij import Job, JobAttributes, JobExecutor, JobSpec

    ex = JobExecutor.get_instance(name, url=url, config=config)  # type: ignore[arg-type]
    jobs = [
        Job(JobSpec(executable="/bin/true", attributes=JobAttributes(queue_name="debug",
                                                                     duration=timedelta(minutes=5))))
        for _ in range(n)
    ]
    first = time.monotonic()
    for j in jobs:
        ex.submit(j)
    t0 = time.monotonic()
    for j in jobs:
        st = j.wait(timeout=timedelta(seconds=600))
        assert st is not None and st.final, j
    return time.monotonic() - t0, time.monotonic() - first, counts(d)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    from hpc_host.psij import HpcHostExecutorConfig

    rows = []
    home = Path(tempfile.mkdtemp(prefix="hh-bench-"))
    try:
        for label in ("raw sbatch + sacct loop (1 s)", "PSI/J `slurm` executor", "PSI/J `hpc-host` executor"):
            d = Path(tempfile.mkdtemp(dir=home))
            wrappers(d)
            os.environ["PATH"] = f"{d}:{os.environ['PATH']}"
            if label.startswith("raw"):
                secs, total, c = raw(n, d)
            elif "`slurm`" in label:
                from psij.executors.batch.slurm import SlurmExecutorConfig

                secs, total, c = psij_run(n, d, "slurm", None, SlurmExecutorConfig(work_directory=d / "work"))
            else:
                environ = {
                    **site_environ(home, d),
                    "CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM": "1",
                }
                cfg = HpcHostExecutorConfig(socket=environ["HPC_SOCKET"], environ=environ)
                transport = os.environ.get("BENCH_TRANSPORT", "daemon")
                secs, total, c = psij_run(n, d, "hpc-host", f"hpc-host://slurm?transport={transport}", cfg)
                label += f" ({transport})"
            rows.append((label, secs, total, c))
            print(f"{label}: {secs:.2f} s ({total:.2f} s), {c}", file=sys.stderr, flush=True)
    finally:
        stop_daemons(str(home / "run" / "hpc-host.sock"))
        shutil.rmtree(home, ignore_errors=True)
    print(f"| {n} trivial jobs | last submit → all final | first submit → all final "
          "| sbatch | squeue | sacct | scancel |")
    print("|---|---|---|---|---|---|---|")
    for label, secs, total, c in rows:
        print(f"| {label} | {secs:.2f} s | {total:.2f} s | {c['sbatch']} | {c['squeue']} "
              f"| {c['sacct']} | {c['scancel']} |")


if __name__ == "__main__":
    main()
