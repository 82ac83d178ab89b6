"""Finding the ``hpc-host`` binary, the way ruff's ``find_ruff_bin`` does."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import threading
from pathlib import Path

#: The environment variable naming the binary to use.
BIN_ENV = "HPC_HOST_BIN"

# sysconfig fills its variables on first use, and not thread-safely: a
# thread that asks while another fills them sees some missing (CPython 3.11
# raised `AttributeError: 'userbase'` when the PSI/J executor's watcher thread
# and the main thread each made their first client at once). Fill them now,
# at import, and look for the binary one thread at a time.
sysconfig.get_config_vars()
_lock = threading.Lock()


def find_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    """The ``hpc-host`` binary: ``explicit``, else ``$HPC_HOST_BIN``, else the one
    the wheel installed beside this package (its scripts folder), else ``PATH``.

    Raises ``FileNotFoundError`` naming every place looked at.
    """
    with _lock:
        return _find(explicit)


def _find(explicit: str | os.PathLike[str] | None) -> str:
    if explicit is not None:
        return os.fspath(explicit)
    from_env = os.environ.get(BIN_ENV)
    if from_env:
        return from_env
    exe = "hpc-host" + (sysconfig.get_config_var("EXE") or "")
    candidates: list[Path] = [Path(sysconfig.get_path("scripts")) / exe]
    # `pip install --user`: the user scheme's scripts folder.
    user_scheme = {"posix": "posix_user", "nt": "nt_user"}.get(os.name)
    if user_scheme and user_scheme in sysconfig.get_scheme_names():
        candidates.append(Path(sysconfig.get_path("scripts", scheme=user_scheme)) / exe)
    # `pip install --target DIR`: DIR/bin next to DIR/hpc_host.
    candidates.append(Path(__file__).resolve().parent.parent / "bin" / exe)
    # A venv's bin folder when sysconfig points elsewhere (an embedded interpreter).
    candidates.append(Path(sys.prefix) / "bin" / exe)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    on_path = shutil.which(exe)
    if on_path:
        return on_path
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"cannot find the `hpc-host` binary (looked at ${BIN_ENV}, {looked} and PATH)\n\n"
        "hint: `pip install hpc-host` installs it; or set HPC_HOST_BIN"
    )
