"""What ``Client`` and ``AsyncClient`` share, without I/O of its own.

:class:`ClientCore` holds a client's options and what it knows of the daemon
on its socket: whether calls go there or through the CLI, remembered until
the socket file changes. It turns an operation's request into an
``httpx.Request`` and its CLI call into an argv and environment, and
:class:`Attempts` decides what a failed request means: send it again, look
for the daemon again, or raise. The two clients are shells around it that
send, run and wait, the one blocking, the other awaiting.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from . import _daemon
from ._ops import DEFAULT_TIMEOUT, Cli, Http
from ._options import Options, Transport
from .errors import Unavailable

__all__ = ["Attempts", "ClientCore"]


@dataclass(frozen=True)
class _Found:
    """What a client found on its socket: whether it may use that daemon,
    and which socket file was there (``_daemon.file_id``)."""

    usable: bool
    file: tuple[int, int, int] | None


class ClientCore:
    """The state and decisions of a client; see ``Client`` for the arguments.

    ``max_connections`` bounds the connections open to the daemon at once:
    in all for ``AsyncClient``, per thread for ``Client`` (whose threads each
    have their own).
    """

    def __init__(
        self,
        *,
        config: str | os.PathLike[str] | None = None,
        env: str | None = None,
        backend: str | None = None,
        transport: Transport = "daemon",
        autostart: bool = True,
        socket: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float = 30.0,
        max_connections: int = 100,
    ) -> None:
        if transport not in ("daemon", "cli"):
            raise ValueError(f"transport must be `daemon` or `cli`, not {transport!r}")
        self._opts = Options(
            binary=None if binary is None else os.fspath(binary),
            config=None if config is None else os.fspath(config),
            env=env,
            backend=backend,
            environ=environ,
            socket=None if socket is None else os.fspath(socket),
            autostart=autostart,
            transport=transport,
            timeout=timeout,
            start_timeout=start_timeout,
            max_connections=max_connections,
        )
        self._sock: str | None = None
        self._found: _Found | None = None
        #: Guards what the sync client's threads share (the async client's
        #: one event loop takes it only around code that does not await).
        self._lock = threading.Lock()

    @property
    def transport(self) -> Transport:
        """``daemon`` or ``cli``: how calls go (``cli`` also while the daemon on
        the socket serves other settings than this client's)."""
        found = self._found
        mismatch = found is not None and not found.usable
        return "cli" if self._opts.transport == "cli" or mismatch else "daemon"

    # -- the daemon on the socket ---------------------------------------------

    def _known(self) -> bool | None:
        """Whether calls go to the daemon, if that is known without asking it:
        ``None`` before the first call, after a connection failed, and when
        the socket file is not the one that was looked at (a daemon started,
        or went away)."""
        if self._opts.transport == "cli":
            return False
        found = self._found
        if found is None or self._sock is None or _daemon.file_id(self._sock) != found.file:
            return None
        return found.usable

    def _found_daemon(self, sock: str, health: dict[str, Any]) -> bool:
        """Remember what answered on ``sock``; whether calls may go to it.

        A daemon that serves other settings is not used (calls go through the
        CLI, with this client's settings), and not asked again until its
        socket file changes.
        """
        self._sock = sock
        usable = _daemon.matches(self._opts, health)
        if not usable:
            warnings.warn(
                f"the daemon on {sock} serves {health.get('settings_file')} "
                f"[{health.get('env')}], not this client's settings: calls go through the CLI",
                stacklevel=5,
            )
        self._found = _Found(usable, _daemon.file_id(sock))
        return usable

    def _forget(self) -> None:
        """Look for the daemon again on the next call (and start one, with autostart)."""
        self._found = None

    # -- requests and runs ----------------------------------------------------

    def _request(self, req: Http) -> httpx.Request:
        """The HTTP request of ``req``, with this client's backend and timeouts."""
        query = dict(req.query)
        if self._opts.backend is not None:
            query["backend"] = self._opts.backend
        base = self._opts.timeout
        timeout = httpx.Timeout(base, read=None if req.holds is None else req.holds + base)
        return httpx.Request(
            req.method,
            _daemon.BASE_URL + req.path,
            params=query,
            json=req.body,
            extensions={"timeout": timeout.as_dict()},
        )

    def _limits(self) -> httpx.Limits:
        # As many kept alive as may be open: httpcore then never closes an
        # idle connection to make room (see `_transport.ThreadPools`).
        n = self._opts.max_connections
        return httpx.Limits(max_connections=n, max_keepalive_connections=n)

    def _process(self, cli: Cli) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of a CLI run (which never asks a daemon:
        the client found none it may use)."""
        return self._opts.cli_command(cli.args), self._opts.process_env(no_daemon=True)

    def _attempts(self, req: Http) -> Attempts:
        return Attempts(req, self._opts.autostart)

    def _stream_broke(self, e: Exception) -> Unavailable:
        return Unavailable(f"the event stream from {self._sock} broke: {e}")


def cannot_run(exe: str, e: OSError) -> Unavailable:
    """A CLI run that could not start."""
    return Unavailable(f"cannot run `{exe}`: {e}")


class Attempts:
    """What a request that got no answer means, and whether to send it again.

    - Nothing was sent (the connection could not be made): with autostart,
      the daemon is looked for again (and started) and the request sent once
      more; else ``Unavailable``.
    - The connection broke before the answer: a request that is safe to send
      twice (``Http.repeatable``: reads, cancel, a submit with idempotency
      keys) goes once more, on another connection, to the daemon that is
      there; if none answers now, it went away mid-call: ``Unavailable``, not
      a new daemon (the next call starts one); a ``wait`` sent again waits
      its whole timeout again. Any other request (a submit without key may
      have reached the daemon) raises ``Unavailable``.
    - No answer in time: ``Unavailable``.
    """

    def __init__(self, req: Http, autostart: bool) -> None:
        self._req = req
        self._autostart = autostart
        self._looked_again = False
        self._broke: Exception | None = None

    def failed(self, e: httpx.TransportError, sock: str | None) -> bool:
        """Raise the ``Unavailable`` that ``e`` means, or say the request goes
        again: ``True`` when the daemon must be looked for first."""
        if isinstance(e, httpx.TimeoutException):
            raise Unavailable(f"the daemon on {sock} did not answer in time: {e}") from e
        if isinstance(e, httpx.ConnectError):
            if self._broke is not None:
                raise Unavailable(f"the daemon on {sock} went away mid-call: {self._broke}") from e
            if self._looked_again or not self._autostart:
                raise Unavailable(f"no hpc-host daemon answers on {sock}: {e}") from e
            self._looked_again = True
            return True
        if self._req.repeatable and self._broke is None:
            self._broke = e
            return False
        if self._req.repeatable:
            raise Unavailable(f"the daemon on {sock} went away mid-call: {e}") from e
        raise Unavailable(
            f"the connection to the daemon on {sock} broke before it answered: {e}\n\n"
            "hint: the request may have reached the daemon; a submit is safe to send "
            "again only with an idempotency key (then `find_job` tells what it made)"
        ) from e
