"""Connections to the daemon's socket that check who serves it.

Every new connection, before a byte is sent, must reach a socket file this
user owns, served by a process of this user (``SO_PEERCRED``). On a shared
folder (``HPC_SOCKET`` under ``/tmp``) another user may bind the path first
or after a daemon has gone; job specs carry tokens in their environment, so
such a socket must never see a request. The daemon refuses other users'
connections on its side; this is the client's side, as the CLI's.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from .errors import Denied

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def check_socket_file(path: str) -> bool:
    """Whether a socket of this user's is at ``path`` (``False``: nothing there).

    Raises :class:`Denied` for anything else: a file that is not a socket,
    or another user's socket.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise Denied(f"refusing the daemon's socket: `{path}` exists and is not a socket")
    if st.st_uid != os.geteuid():
        raise Denied(
            f"refusing the daemon's socket: `{path}` is owned by uid {st.st_uid}, "
            f"not by this user ({os.geteuid()}): another user made it"
        )
    return True


def check_peer(sock: socket.socket, path: str) -> None:
    """Raise :class:`Denied` unless this user's process accepted ``sock``."""
    pid, uid, _ = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    if uid != os.geteuid():
        raise Denied(
            f"refusing the daemon's socket: `{path}` is served by uid {uid} (pid {pid}), "
            f"not by this user ({os.geteuid()})"
        )


def _check_stream(stream: Any, path: str) -> None:
    """:func:`check_peer` on an httpcore stream's socket."""
    raw = stream.get_extra_info("socket")
    if not isinstance(raw, socket.socket):
        raise Denied(f"refusing the daemon's socket: cannot tell who serves `{path}`")
    check_peer(raw, path)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise Denied("the daemon's client connects to its Unix socket only")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if not check_socket_file(path):
            raise httpcore.ConnectError(f"no socket at {path}")
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        try:
            _check_stream(stream, path)
        except Denied:
            stream.close()
            raise
        return stream

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise Denied("the daemon's client connects to its Unix socket only")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not check_socket_file(path):
            raise httpcore.ConnectError(f"no socket at {path}")
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        try:
            _check_stream(stream, path)
        except Denied:
            await stream.aclose()
            raise
        return stream

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def transport(sock: str, limits: httpx.Limits | None = None) -> httpx.HTTPTransport:
    """An httpx transport on ``sock`` whose every connection is checked."""
    lim = limits or httpx.Limits()
    t = httpx.HTTPTransport(uds=sock, limits=lim)
    # httpx does not take a network backend; its pool (httpcore's public
    # ConnectionPool) does: rebuilt with the same limits and the checks.
    t._pool = httpcore.ConnectionPool(**_pool_options(sock, lim), network_backend=_Backend())
    return t


def _pool_options(sock: str, limits: httpx.Limits) -> dict[str, Any]:
    """httpcore's pool options for ``limits`` on ``sock``."""
    return {
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "uds": sock,
    }


class ThreadPools(httpx.BaseTransport):
    """One connection pool per thread (and per process) on ``sock``: the
    transport of a client that threads share.

    httpcore's pool (1.0.9) must not be shared by threads. It hands a request
    an idle connection under its lock, but the connection stays idle until
    the request's own thread starts using it; meanwhile another thread's pass
    over the pool may judge it a surplus or expired idle connection and close
    it, outside the lock and whatever its state by then (encode/httpcore#1110).
    The first thread then writes to or reads from a closed socket: ``[Errno 9]
    Bad file descriptor``, or a read that waits for its timeout. (The surplus
    rule counts every connection, not the idle ones, against
    ``max_keepalive_connections``: with httpx's default of 20, 20 threads made
    it fire whenever the pool briefly held a 21st connection.) A pool that
    only its own thread ever touches cannot race.

    A thread's pool is closed when the thread ends, or by :meth:`close`. A
    forked child makes its own (it must not share its parent's sockets).
    """

    def __init__(self, sock: str, limits: httpx.Limits) -> None:
        self._sock = sock
        self._limits = limits
        self._local = threading.local()
        self._lock = threading.Lock()
        self._closers: list[weakref.finalize[[], _Slot]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._pool().handle_request(request)

    def _pool(self) -> httpx.HTTPTransport:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.pid != os.getpid():
            slot = self._local.slot = _Slot(transport(self._sock, self._limits))
            # The thread-local slot goes when its thread ends: close its pool then.
            closer = weakref.finalize(slot, slot.transport.close)
            with self._lock:
                self._closers = [c for c in self._closers if c.alive] + [closer]
        return slot.transport

    def close(self) -> None:
        """Close every thread's pool (a thread still in a call gets an error)."""
        with self._lock:
            closers, self._closers = self._closers, []
        for closer in closers:
            closer()


class _Slot:
    """A thread's pool, and the process it was made in."""

    def __init__(self, transport: httpx.HTTPTransport) -> None:
        self.transport = transport
        self.pid = os.getpid()


def async_transport(sock: str, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """The async :func:`transport`."""
    lim = limits or httpx.Limits()
    t = httpx.AsyncHTTPTransport(uds=sock, limits=lim)
    t._pool = httpcore.AsyncConnectionPool(
        **_pool_options(sock, lim), network_backend=_AsyncBackend()
    )
    return t
