"""``submit_many``: one request for many jobs, per spec its id or its error,
safe to send again with keys; sync and async clients and the drop-in backend,
over the daemon and through the CLI, on the local backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import TRANSPORTS, Site

import hpc_host
from hpc_host import InvalidRequest, JobSpec


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_submit_many_answers_each_spec_in_order(site: Site, transport: str) -> None:
    client = site.client(transport=transport)
    run = uuid.uuid4().hex
    specs = [
        JobSpec(execution_command=["/bin/sh", "-c", "echo many-0"]),
        {"execution_command": []},
        {"execution_command": "echo many-2; exit 5"},
    ]
    keys = [f"{run}-0", None, f"{run}-2"]
    results = client.submit_many(specs, idempotency_keys=keys)
    assert len(results) == 3
    assert isinstance(results[1], InvalidRequest), results
    first, third = results[0], results[2]
    assert isinstance(first, str) and isinstance(third, str) and first != third
    ended = client.wait([first, third], timeout=60)
    assert [(i.status, i.exit_code) for i in ended] == [("completed", 0), ("failed", 5)]
    assert client.logs(first).stdout == "many-0\n"
    assert client.logs(third).stdout == "many-2\n"
    # Sent again (the bad spec left out): the same jobs, none new.
    again = client.submit_many([specs[2], specs[0]], idempotency_keys=[keys[2], keys[0]])
    assert again == [third, first]


def test_async_client_and_backend_submit_many(site: Site) -> None:
    async def main() -> list[str | hpc_host.HpcHostError]:
        async with site.aclient() as client:
            return await client.submit_many(
                [{"execution_command": ["true"]}, {"execution_command": ["false"]}]
            )

    results = asyncio.run(main())
    assert all(isinstance(r, str) for r in results) and len(set(results)) == 2
    backend = site.backend()
    ids = backend.submit_many([{"execution_command": ["true"]}] * 3)
    assert len(set(ids)) == 3
    assert all(i.status == "completed" for i in backend.wait(ids, timeout=60))
    # The drop-in raises the first per-spec error, after the rest were made.
    with pytest.raises(InvalidRequest):
        backend.submit_many([{"execution_command": ["true"]}, {"execution_command": []}])


def test_submit_many_checks_its_arguments(site: Site) -> None:
    client = site.client()
    with pytest.raises(ValueError, match="no specs"):
        client.submit_many([])
    with pytest.raises(ValueError, match="2 idempotency keys for 1 specs"):
        client.submit_many([{"execution_command": ["true"]}], idempotency_keys=["a", "b"])
