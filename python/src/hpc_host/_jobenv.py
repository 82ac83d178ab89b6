"""What a job needs to find this interpreter's programs.

hpc-host gives a job a minimal environment (``PATH=/usr/local/bin:/usr/bin:/bin``
and a few named variables, never the submitter's whole environment), while
the peers' own providers and executors let jobs inherit the submitter's. A
worker command installed next to this interpreter (Parsl's
``process_worker_pool.py``, Dask's ``distributed.cli.dask_worker``, Snakemake
itself) is then not found: exit code 127. The adapters carry exactly this:
the interpreter's ``bin`` folder in front of the job's ``PATH`` and, in a
virtual environment, ``VIRTUAL_ENV``.
"""

from __future__ import annotations

import os
import shlex
import sys

__all__ = ["interpreter_bin", "virtual_env", "shell_prelude", "job_path"]

#: The ``PATH`` every backend gives a job (the local supervisor and SLURM's sbatch).
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def interpreter_bin() -> str:
    """The folder of this interpreter (a venv's ``bin``), as given (not resolved:
    a venv's ``python`` is a symlink to the base interpreter)."""
    return os.path.dirname(os.path.abspath(sys.executable))


def virtual_env() -> str | None:
    """The virtual environment this interpreter runs in, if any."""
    if sys.prefix != sys.base_prefix:
        return sys.prefix
    return os.environ.get("VIRTUAL_ENV") or None


def shell_prelude() -> str:
    """Shell lines that put the interpreter's folder in front of ``PATH`` and set
    ``VIRTUAL_ENV`` (for a script that the user's own lines follow, so that
    they can say otherwise)."""
    lines = [f'export PATH={shlex.quote(interpreter_bin())}:"$PATH"']
    venv = virtual_env()
    if venv is not None:
        lines.append(f"export VIRTUAL_ENV={shlex.quote(venv)}")
    return "\n".join(lines) + "\n"


def job_path() -> str:
    """A whole ``PATH`` for a job: the interpreter's folder, then the backends' default."""
    return f"{interpreter_bin()}:{BASE_PATH}"
