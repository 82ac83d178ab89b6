"""What a client was told: the binary, the settings it passes through, the transport.

The client never reads ``settings.toml`` itself (the host's Dynaconf rules stay
in the host): it passes ``config``, ``env`` and ``backend`` to the CLI as
``--config``/``--env``/``--backend``, and to the daemon it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ._binary import find_binary

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
    max_connections: int = 100
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
            # A call the client runs through the CLI is one no daemon may
            # take: the client found none it may use (`transport="cli"`, or a
            # daemon serving other settings). Without this each run would ask
            # that daemon again, to find it serves other settings again.
            env["CCAT_WORKFLOW_MANAGER_HPC_DAEMON"] = "never"
        return env

    def cli_command(self, args: Sequence[str]) -> list[str]:
        """The full argv of one CLI call with JSON output."""
        return [self.exe(), "--output", "json", *self.global_args(), *args]
