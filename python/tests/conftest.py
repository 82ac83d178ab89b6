"""A throw-away site per test: its own HOME, state folder, socket and daemon.

Every test gets a ``Site``: a temp folder used as HOME (so the host's state,
plugins folder and default socket are its own), an explicit socket path, and
the ``CCAT_WORKFLOW_MANAGER_*`` overrides the test sets. Clients made by
``site.client()`` / ``site.backend()`` use exactly that; daemons they start
are killed at teardown (found by the socket in their environment).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hpc_host
from hpc_host import _daemon


def pytest_configure(config: pytest.Config) -> None:
    # A thread that raises fails its test. pytest only warns about it by
    # default, so a test whose worker thread died could pass (issue 19: a
    # polling thread died with EBADF and its test passed). Set here, not in
    # pyproject.toml: scripts/test.sh runs a copy of this folder, where
    # pyproject's pytest settings do not reach.
    config.addinivalue_line(
        "filterwarnings", "error::pytest.PytestUnhandledThreadExceptionWarning"
    )


def daemon_pids(sock: str) -> list[int]:
    """Pids of `hpc-host serve` processes started for ``sock``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split(") ", 1)[-1].startswith("Z"):
            continue
        if b"serve" in cmdline and f"HPC_SOCKET={sock}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def counting(dir: Path, program: str) -> str:
    """A wrapper for a scheduler program that counts its calls (as host/tests/all/slurm.rs)."""
    path = dir / f"{program}-counting"
    calls = dir / f"{program}.calls"
    path.write_text(f"#!/bin/sh\necho call >> '{calls}'\nexec /usr/bin/{program} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def calls(dir: Path, program: str) -> int:
    """How often a ``counting`` wrapper ran."""
    try:
        return len((dir / f"{program}.calls").read_text().splitlines())
    except FileNotFoundError:
        return 0


class Site:
    """One test's HOME, settings overrides and socket."""

    def __init__(self) -> None:
        # Short: a Unix socket path has at most 107 bytes.
        self.home = Path(tempfile.mkdtemp(prefix="hh-"))
        self.socket = str(self.home / "run" / "hpc-host.sock")
        cache = Path(tempfile.gettempdir()) / f"hpc-host-test-cache-{os.geteuid()}"
        self.environ: dict[str, str] = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "HPC_SOCKET": self.socket,
            "CCAT_WORKFLOW_MANAGER_HPC_SOCKET": self.socket,
            "CCAT_WORKFLOW_MANAGER_HPC_CACHE_DIR": str(cache),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        }

    def set(self, key: str, value: str) -> Site:
        """Set a variable for the CLI and daemons of this site (a daemon already
        running serves the old settings: it is stopped, the next client starts one)."""
        self.kill_daemons()
        self.environ[key] = value
        return self

    def slurm(self) -> Site:
        """Use the SLURM test cluster's `debug` partition."""
        self.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm")
        return self.set("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug")

    def client(self, **kw: Any) -> hpc_host.Client:
        return hpc_host.Client(socket=self.socket, environ=self.environ, **kw)

    def aclient(self, **kw: Any) -> hpc_host.AsyncClient:
        return hpc_host.AsyncClient(socket=self.socket, environ=self.environ, **kw)

    def backend(self, **kw: Any) -> hpc_host.HpcHostBackend:
        return hpc_host.HpcHostBackend(socket=self.socket, environ=self.environ, **kw)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the CLI with this site's environment (no daemon)."""
        env = {**self.environ, "CCAT_WORKFLOW_MANAGER_HPC_DAEMON": "never"}
        return subprocess.run(
            [hpc_host.find_binary(), *args], capture_output=True, text=True, env=env, check=False
        )

    def daemons(self) -> list[int]:
        return daemon_pids(self.socket)

    def kill_daemons(self) -> None:
        for pid in self.daemons():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.daemons() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.kill_daemons()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


def has_daemon() -> bool:
    """Whether the installed binary has `serve` (the daemon of issue 8)."""
    p = subprocess.run(
        [hpc_host.find_binary(), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return p.returncode == 0


#: Both transports, for tests whose behaviour must not depend on it.
TRANSPORTS = ["daemon", "cli"]


def health(sock: str) -> dict[str, Any] | None:
    return _daemon.health(sock)
