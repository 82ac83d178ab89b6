"""Finding this user's daemon, and starting one when nobody answers.

The start is the Gradle/Bazel-server pattern: an exclusive ``fcntl`` lock on a
file beside the socket, then a second look (another process may have started
one while we waited for the lock), then ``hpc-host serve`` in a new session,
then wait until ``/v1/health`` answers. Any number of processes starting at once
make one daemon.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from ._options import Options
from . import _transport
from .errors import Denied, Unavailable, error_from_cli

#: The host name in request URLs (the socket decides where they go).
BASE_URL = "http://hpc-host"
_started: list[subprocess.Popen[bytes]] = []


def socket_path(opts: Options) -> str:
    """The daemon's socket for these settings.

    ``socket=`` wins; else the CLI says (``hpc-host serve --identify``, which
    reads the settings as the daemon will, and also gives their fingerprint,
    kept in ``opts.fingerprint`` for :func:`matches`); else the documented
    default from the environment: ``CCAT_WORKFLOW_MANAGER_HPC_SOCKET``, then
    ``$XDG_RUNTIME_DIR/hpc-host/hpc-host.sock``, then the state folder.
    """
    identity = _identify(opts)
    if identity is not None:
        opts.fingerprint = identity["fingerprint"]
    if opts.socket is not None:
        return os.fspath(opts.socket)
    if identity is not None:
        return identity["socket"]
    env = opts.process_env()
    if env.get("CCAT_WORKFLOW_MANAGER_HPC_SOCKET"):
        return env["CCAT_WORKFLOW_MANAGER_HPC_SOCKET"]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return str(Path(runtime) / "hpc-host" / "hpc-host.sock")
    state = env.get("CCAT_WORKFLOW_MANAGER_HPC_STATE_DIR")
    if not state:
        base = env.get("XDG_STATE_HOME") or str(
            Path(env.get("HOME") or str(Path.home())) / ".local" / "state"
        )
        state = str(Path(base) / "hpc-host")
    return str(Path(state) / "hpc-host.sock")


def _identify(opts: Options) -> dict[str, str] | None:
    """``{"socket", "fingerprint"}`` from ``hpc-host serve --identify``, or ``None``."""
    try:
        p = subprocess.run(
            [opts.exe(), *opts.global_args(), "serve", "--identify"],
            capture_output=True,
            text=True,
            env=opts.process_env(),
            timeout=30,
            check=False,
        )
        answer = json.loads(p.stdout) if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(answer, dict):
        return None
    sock, fingerprint = answer.get("socket"), answer.get("fingerprint")
    if not (isinstance(sock, str) and sock.startswith("/") and isinstance(fingerprint, str)):
        return None
    return {"socket": sock, "fingerprint": fingerprint}


def health(sock: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET /v1/health`` on ``sock``, or ``None`` when nobody answers there."""
    if not _transport.check_socket_file(sock):
        return None
    try:
        with httpx.Client(transport=_transport.transport(sock), base_url=BASE_URL) as c:
            r = c.get("/v1/health", timeout=timeout)
    except httpx.TransportError:
        return None
    if r.status_code != 200:
        return None
    body = r.json()
    return body if isinstance(body, dict) else None


def matches(opts: Options, h: dict[str, Any]) -> bool:
    """Whether a daemon serves the settings this client would use.

    By the settings' fingerprint when the CLI gave it (the file, the
    environment, every ``CCAT_WORKFLOW_MANAGER_`` variable, as the CLI itself
    checks); else by the settings file and environment name.
    """
    if opts.fingerprint is not None and h.get("fingerprint") is not None:
        return bool(h["fingerprint"] == opts.fingerprint)
    if opts.config is not None and h.get("settings_file") is not None:
        if Path(opts.config).resolve() != Path(str(h["settings_file"])).resolve():
            return False
    if opts.env is not None and h.get("env") is not None and h["env"] != opts.env:
        return False
    return True


def discover(opts: Options, sock: str | None) -> tuple[str, dict[str, Any]]:
    """The daemon's socket (``sock``, else computed) and the health of the
    daemon on it, started first with ``opts.autostart``; ``Unavailable`` when
    none answers. Blocks (the async client runs it in a thread)."""
    sock = sock or socket_path(opts)
    h = ensure_daemon(opts, sock) if opts.autostart else health(sock)
    if h is None:
        raise Unavailable(
            f"no hpc-host daemon answers on {sock}\n\n"
            "hint: start one with `hpc-host serve`, or use autostart=True or transport=\"cli\""
        )
    return sock, h


def file_id(sock: str) -> tuple[int, int, int] | None:
    """Which socket file is at ``sock`` (``None``: none): a daemon that
    starts binds a new one, so a client that remembers what it found there
    sees when to look again, for the price of a ``stat``."""
    try:
        st = os.stat(sock)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


def ensure_daemon(opts: Options, sock: str) -> dict[str, Any]:
    """The health of the daemon on ``sock``, starting one first if nobody answers."""
    h = health(sock)
    if h is not None:
        return h
    folder = Path(sock).parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private_folder(folder)
    lock_path = folder / (Path(sock).name + ".start.lock")
    with os.fdopen(_open_private(lock_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            h = health(sock)
            if h is not None:
                return h
            return _start(opts, sock, folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_private_folder(folder: Path) -> None:
    """The socket's folder must be this user's and writable by nobody else
    (the daemon refuses to serve elsewhere; here the lock and log go)."""
    st = os.stat(folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise Denied(
            f"refusing the daemon's socket folder `{folder}`: owned by uid {st.st_uid} "
            f"with mode {st.st_mode & 0o7777:o}; it must be yours and writable by nobody else\n\n"
            "hint: set `HPC_SOCKET` to a path in a folder only you can write"
        )


def _open_private(path: Path) -> int:
    """Open ``path`` for appending, 0600, never through a symbolic link."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def _start(opts: Options, sock: str, folder: Path) -> dict[str, Any]:
    env = opts.process_env()
    env.pop("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", None)
    env["CCAT_WORKFLOW_MANAGER_HPC_SOCKET"] = sock
    env["HPC_SOCKET"] = sock
    log_path = folder / "hpc-host-daemon.log"
    # `--auto`: a daemon started on demand ends after `HPC_DAEMON_IDLE_SECONDS`
    # without a client or an open job.
    cmd = [opts.exe(), *opts.global_args(), "serve", "--auto"]
    with os.fdopen(_open_private(log_path), "ab") as log:
        offset = log.tell()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise Unavailable(f"cannot start the daemon `{' '.join(cmd)}`: {e}") from e
    # Keep the handle so the interpreter reaps it if it ever exits.
    _started.append(proc)
    deadline = time.monotonic() + opts.start_timeout
    while time.monotonic() < deadline:
        h = health(sock, timeout=1.0)
        if h is not None:
            return h
        code = proc.poll()
        if code in (2, 3, 4):
            # The daemon refused these settings (a plugin that cannot load, a
            # policy that denies it): that error is the caller's.
            raise error_from_cli(code, _since(log_path, offset))
        if code is not None and code != 0:
            raise Unavailable(
                f"the daemon `{' '.join(cmd)}` exited {code} before it answered on {sock}: "
                f"{_tail(log_path)}"
            )
        time.sleep(0.02)
    raise Unavailable(
        f"the daemon `{' '.join(cmd)}` did not answer on {sock} within "
        f"{opts.start_timeout:.0f} s: {_tail(log_path)}"
    )


def _since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
