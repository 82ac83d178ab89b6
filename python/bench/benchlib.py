"""What the benchmarks here share: wrapper programs that count the scheduler
commands a run makes, the environment of a throw-away hpc-host site, and
stopping the daemons a run started.

The benchmarks run as scripts (``python python/bench/<name>.py``), so this
module is importable as ``benchlib`` from their folder.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

PROGRAMS = ("sbatch", "squeue", "sacct", "scancel")


def wrappers(d: Path) -> None:
    """Put a wrapper of each of ``PROGRAMS`` in ``d`` (named like it) that
    counts its calls in ``<program>.calls`` and runs the real one."""
    d.mkdir(parents=True, exist_ok=True)
    for prog in PROGRAMS:
        w = d / prog
        w.write_text(f"#!/bin/sh\necho call >> '{d}/{prog}.calls'\nexec /usr/bin/{prog} \"$@\"\n")
        w.chmod(0o755)
        (d / f"{prog}.calls").write_text("")


def counts(d: Path) -> dict[str, int]:
    """How often each wrapper in ``d`` ran."""
    return {p: len((d / f"{p}.calls").read_text().splitlines()) for p in PROGRAMS}


def site_environ(home: Path, wrappers_dir: Path | None = None) -> dict[str, str]:
    """The environment of an hpc-host site in ``home``: its own daemon socket,
    and with ``wrappers_dir``, SLURM on the test cluster's partition running
    the counting wrappers there."""
    sock = str(home / "run" / "hpc-host.sock")
    environ = {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "HPC_SOCKET": sock,
        "CCAT_WORKFLOW_MANAGER_HPC_SOCKET": sock,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    if wrappers_dir is not None:
        programs = "{ " + ", ".join(f'{p} = "{wrappers_dir / p}"' for p in PROGRAMS) + " }"
        environ["CCAT_WORKFLOW_MANAGER_SLURM_PARTITION"] = "debug"
        environ["CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS"] = programs
    return environ


def stop_daemons(sock: str) -> None:
    """Stop the daemons this run started (found by the socket in their environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and f"HPC_SOCKET={sock}".encode() in environ:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except ProcessLookupError:
                pass
