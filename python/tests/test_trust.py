"""The client checks who serves the socket before it sends anything (issue 22).

Another user (``nobody``, through ``setpriv``) binds the socket path in a
shared folder first; the client must refuse it with ``Denied`` and the
squatter must receive nothing: job specs carry tokens.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hpc_host
from hpc_host import Denied, JobSpec

from conftest import Site

SQUATTER = r"""
import os, socket, sys
path, got = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open(got, "ab") as f:
        f.write(data)
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    c.close()
"""


@pytest.fixture
def squatted() -> Iterator[tuple[str, Path]]:
    """A socket that ``nobody`` serves in a shared, sticky folder, and the
    file where it records what it received."""
    shared = Path(tempfile.mkdtemp(prefix="hh-shared-"))
    shared.chmod(0o1777)
    sock, got = shared / "hpc.sock", shared / "got"
    proc = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", SQUATTER, str(sock), str(got)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline, "the squatter did not bind"
        time.sleep(0.02)
    try:
        yield str(sock), got
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def test_a_socket_another_user_serves_gets_nothing(site: Site, squatted: tuple[str, Path]) -> None:
    sock, got = squatted
    env = {**site.environ, "HPC_SOCKET": sock, "CCAT_WORKFLOW_MANAGER_HPC_SOCKET": sock}
    spec = JobSpec(["true"], environment_variables={"API_TOKEN": "s3cr3t-token"})
    client = hpc_host.Client(socket=sock, environ=env, autostart=False)
    with pytest.raises(Denied) as e:
        client.submit(spec)
    assert "owned by uid 65534" in str(e.value), e.value
    # Autostart: the client refuses before it starts anything or sends a byte.
    with pytest.raises(Denied):
        hpc_host.Client(socket=sock, environ=env).submit(spec)
    time.sleep(0.3)
    assert not got.exists() or got.read_bytes() == b"", got.read_bytes()


def test_the_async_client_refuses_it_too(site: Site, squatted: tuple[str, Path]) -> None:
    import asyncio

    sock, got = squatted
    env = {**site.environ, "HPC_SOCKET": sock, "CCAT_WORKFLOW_MANAGER_HPC_SOCKET": sock}

    async def go() -> None:
        async with hpc_host.AsyncClient(socket=sock, environ=env, autostart=False) as c:
            await c.submit(JobSpec(["true"], environment_variables={"API_TOKEN": "t"}))

    with pytest.raises(Denied):
        asyncio.run(go())
    assert not got.exists() or got.read_bytes() == b""


def test_the_psij_event_stream_refuses_it_too(site: Site, squatted: tuple[str, Path]) -> None:
    """The PSI/J executor's event stream opens a connection of its own
    (a long-lived `GET /v1/events`): it is checked like every other one."""
    from hpc_host.psij._watch import Watcher

    sock, got = squatted
    env = {**site.environ, "HPC_SOCKET": sock, "CCAT_WORKFLOW_MANAGER_HPC_SOCKET": sock}
    watcher = Watcher(hpc_host.Client(socket=sock, environ=env, autostart=False), "local")
    with pytest.raises(Denied):
        watcher._stream()
    time.sleep(0.3)
    assert not got.exists() or got.read_bytes() == b"", got.read_bytes()


def test_the_peer_check_refuses_a_socket_this_user_owns_but_another_serves(
    site: Site, squatted: tuple[str, Path]
) -> None:
    """The file check alone is not enough: a socket file of this user's,
    served by another user's process (a hard link to theirs cannot be made,
    but a connection is what counts), is refused by SO_PEERCRED."""
    from hpc_host import _transport
    import socket as sk

    sock, _ = squatted
    with sk.socket(sk.AF_UNIX) as s:
        s.connect(sock)
        with pytest.raises(Denied) as e:
            _transport.check_peer(s, sock)
    assert "served by uid 65534" in str(e.value)


def test_a_daemon_started_by_a_client_is_private(site: Site) -> None:
    client = site.client()
    job = client.submit(JobSpec(["true"]))
    assert client.wait([job], timeout=60)[0].status == "completed"
    folder = Path(site.socket).parent
    assert folder.stat().st_mode & 0o077 == 0
    for name in ("hpc-host-daemon.log", "hpc-host.sock.start.lock"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name
    assert os.stat(site.socket).st_mode & 0o077 == 0
