"""What a client was told: the binary, the settings it passes through, the transport.

The client never reads ``settings.toml`` itself (the host's Dynaconf rules stay
in the host): it passes ``config``, ``env`` and ``backend`` to the CLI as
``--config``/``--env``/``--backend``, and to the daemon it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._binary import find_binary
from .errors import HpcHostError, Unavailable, WaitTimeout, error_from_cli, error_from_kind
from .types import HPCJobInfo

#: How a client reaches the host: the daemon's socket, or one CLI run per call.
Transport = Literal["daemon", "cli"]


@dataclass
class Options:
    """The resolved settings of one client (shared by the sync and async ones)."""

    binary: str | None = None
    config: str | None = None
    env: str | None = None
    backend: str | None = None
    environ: Mapping[str, str] | None = None
    socket: str | None = None
    autostart: bool = True
    transport: Transport = "daemon"
    timeout: float = 60.0
    start_timeout: float = 30.0
    _bin: str | None = field(default=None, repr=False)
    #: The fingerprint of these settings as the CLI computes it
    #: (``hpc-host serve --identify``); ``None`` until asked, or if it could not say.
    fingerprint: str | None = field(default=None, repr=False)

    def exe(self) -> str:
        """The binary, found once."""
        if self._bin is None:
            self._bin = find_binary(self.binary)
        return self._bin

    def global_args(self) -> list[str]:
        """``--config``/``--env``/``--backend`` as the CLI takes them."""
        args: list[str] = []
        if self.config is not None:
            args += ["--config", os.fspath(self.config)]
        if self.env is not None:
            args += ["--env", self.env]
        if self.backend is not None:
            args += ["--backend", self.backend]
        return args

    def process_env(self, *, no_daemon: bool = False) -> dict[str, str]:
        """The environment of a CLI run or of the daemon: ours plus ``environ``."""
        env = dict(os.environ)
        if self.environ is not None:
            env.update(self.environ)
        if no_daemon:
            # `transport="cli"`: the CLI must not hand the call to a daemon.
            env["CCAT_WORKFLOW_MANAGER_HPC_DAEMON"] = "never"
        return env

    def cli_command(self, args: Sequence[str]) -> list[str]:
        """The full argv of one CLI call with JSON output."""
        return [self.exe(), "--output", "json", *self.global_args(), *args]


def run_cli(opts: Options, args: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run the CLI once; a binary that cannot start is ``Unavailable``."""
    try:
        p = subprocess.run(
            opts.cli_command(args),
            input=stdin,
            capture_output=True,
            text=True,
            env=opts.process_env(no_daemon=opts.transport == "cli"),
            check=False,
        )
    except OSError as e:
        raise Unavailable(f"cannot run `{opts.exe()}`: {e}") from e
    return p.returncode, p.stdout, p.stderr


def cli_json(code: int, out: str, err: str, *, json_on_error: bool = False) -> Any:
    """The JSON a CLI run printed, or the exception its exit code and stderr say.

    With ``json_on_error`` (``status``, ``wait``), a run that printed JSON
    returns it even when it failed: per-id errors are inside.
    """
    if code == 1:
        raise WaitTimeout(err.strip().removeprefix("error:").strip(), _jobs_in(out))
    if code == 0 or (json_on_error and code in (2, 3, 4) and out.strip()):
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as e:
            if code == 0:
                raise HpcHostError(f"hpc-host printed no JSON: {out[:200]!r}") from e
    raise error_from_cli(code, err)


def _jobs_in(out: str) -> list[HPCJobInfo]:
    """The statuses a timed-out ``wait`` printed."""
    try:
        obj = json.loads(out)
    except json.JSONDecodeError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    jobs: list[HPCJobInfo] = []
    for item in items:
        try:
            jobs.append(HPCJobInfo.from_json(item))
        except (ValueError, TypeError, AttributeError):
            continue
    return jobs


def raise_item_error(obj: Mapping[str, Any]) -> None:
    """Raise the per-id error of a JobInfo object that could not be answered."""
    err = obj.get("error")
    if obj.get("status") is None and isinstance(err, Mapping):
        raise error_from_kind(str(err.get("kind", "internal")), str(err.get("message", "")))
