"""One event-stream thread per process and settings, shared by every executor.

PSI/J's own executors each run a thread that polls the scheduler. Here the
daemon already polls once per interval for everybody and pushes each change
on ``GET /v1/events``; a ``Watcher`` keeps one such stream open (for all jobs
of one backend) and hands each change to whoever watches that job id. After
every (re)connect, and when the daemon says this reader lagged, it asks the
daemon once for the status of every watched job (one batched request), so a
change missed while disconnected is not lost. Through the CLI (no daemon),
it polls that batched status instead, still one thread for the process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import httpx

from .. import _transport
from ..client import Client
from ..errors import HpcHostError
from ..types import HPCJobInfo, JobEvent

__all__ = ["Watcher", "watcher_for", "Listener"]

log = logging.getLogger(__name__)

#: Called with each new status of a watched job (on the watcher's thread).
Listener = Callable[[HPCJobInfo], None]
#: How many ids (with their last status) a watcher remembers for ``list()``.
MAX_SEEN = 100_000
#: Seconds between polls through the CLI.
CLI_POLL_SECONDS = 1.0
#: A stream that says nothing for this long is dead (the daemon sends a
#: heartbeat every 15 s).
READ_TIMEOUT = 60.0

_registry: dict[Hashable, Watcher] = {}
_registry_lock = threading.Lock()


def watcher_for(
    key: Hashable, make_client: Callable[[], Client], backend: str | None
) -> Watcher:
    """The process's watcher for ``key`` (client settings and backend), started on first use."""
    with _registry_lock:
        w = _registry.get(key)
        if w is None:
            w = Watcher(make_client(), backend)
            _registry[key] = w
        return w


class Watcher:
    """Follows one backend's status changes for this process (see the module doc)."""

    def __init__(self, client: Client, backend: str | None = None) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        self._seen: OrderedDict[str, HPCJobInfo] = OrderedDict()
        self._connected = threading.Event()
        # Set while someone needs the stream: a watched job, or a `ready()`
        # waiting. A watcher nobody needs does not reconnect after the stream
        # broke, so it never starts a daemon again just to watch nothing.
        self._wanted = threading.Event()
        self._wanted.set()
        self._readying = 0
        self._backend = backend
        self._thread = threading.Thread(target=self._run, name="hpc-host-events", daemon=True)
        self._thread.start()

    # -- what executors call ----------------------------------------------------

    def ready(self, timeout: float = 30.0) -> bool:
        """Wait until the stream is open (changes from then on are not missed)."""
        with self._lock:
            self._readying += 1
            self._wanted.set()
        try:
            return self._connected.wait(timeout)
        finally:
            with self._lock:
                self._readying -= 1

    @property
    def backend(self) -> str | None:
        """The backend this watcher follows (the daemon's default when none was named)."""
        return self._backend

    def watch(self, job_id: str, listener: Listener) -> HPCJobInfo | None:
        """Call ``listener`` with every change of ``job_id`` from now on.

        Returns the last status the stream brought for it, if any (a change
        that arrived between the submit and this call).
        """
        with self._lock:
            self._listeners.setdefault(job_id, []).append(listener)
            self._wanted.set()
            return self._seen.get(job_id)

    def unwatch(self, job_id: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``job_id``."""
        with self._lock:
            ls = self._listeners.get(job_id)
            if ls is not None:
                try:
                    ls.remove(listener)
                except ValueError:
                    pass
                if not ls:
                    del self._listeners[job_id]

    def known_ids(self) -> list[str]:
        """Ids of the jobs this process saw on the stream or watches, oldest first."""
        with self._lock:
            ids = list(self._seen)
            ids += [i for i in self._listeners if i not in self._seen]
            return ids

    def deliver(self, info: HPCJobInfo) -> None:
        """Record a status and hand it to the job's listeners."""
        if info.job_id is None:
            return
        with self._lock:
            self._seen[info.job_id] = info
            self._seen.move_to_end(info.job_id)
            while len(self._seen) > MAX_SEEN:
                self._seen.popitem(last=False)
            listeners = list(self._listeners.get(info.job_id, ()))
        for listener in listeners:
            try:
                listener(info)
            except Exception:  # a listener's bug must not stop the stream
                log.exception("a status listener for %s failed", info.job_id)

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while True:
            self._wanted.wait()
            try:
                h = self.client.health()
                if self._backend is None:
                    b = h.get("backend")
                    self._backend = b if isinstance(b, str) else None
                if self.client.transport == "cli":
                    self._poll_cli()
                else:
                    self._stream()
                backoff = 0.2
            except HpcHostError as e:
                log.warning("hpc-host events: %s (retrying in %.1f s)", e, backoff)
            except (httpx.HTTPError, OSError, ValueError) as e:
                log.warning("hpc-host event stream broke: %s (retrying in %.1f s)", e, backoff)
            self._connected.clear()
            with self._lock:
                if not self._listeners and self._readying == 0:
                    self._wanted.clear()  # until a job is watched again
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _stream(self) -> None:
        params = {} if self._backend is None else {"backend": self._backend}
        # Checked like every connection of the client's: this user's socket,
        # served by this user's process, before a byte is sent.
        transport = _transport.transport(self.client.socket)
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
        with httpx.Client(transport=transport, base_url="http://hpc-host", timeout=timeout) as http:
            with http.stream("GET", "/v1/events", params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    raise HpcHostError(f"the daemon refused the event stream: {r.text[:200]}")
                self._connected.set()
                self._resync()
                for line in r.iter_lines():
                    self._line(line)

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        obj: Any = json.loads(line)
        if not isinstance(obj, dict) or "heartbeat" in obj:
            return
        if "lagged" in obj:
            self._resync()
            return
        if obj.get("status") is None:
            return
        self.deliver(JobEvent.from_json(obj).info)

    def _poll_cli(self) -> None:
        self._connected.set()
        while self.client.transport == "cli":
            self._resync()
            time.sleep(CLI_POLL_SECONDS)

    def _resync(self) -> None:
        """One batched status request for every watched job."""
        with self._lock:
            ids = list(self._listeners)
        if not ids:
            return
        for answer in self.client.statuses(ids):
            if isinstance(answer, HPCJobInfo):
                self.deliver(answer)
