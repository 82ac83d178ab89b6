"""Every error kind of the host arrives as its exception, over both transports."""

from __future__ import annotations

import json
import socket as sk
import subprocess
from importlib import resources
from typing import Any

import httpx
import pytest
from conftest import TRANSPORTS, Site

import hpc_host
from hpc_host import Denied, HpcHostError, InvalidRequest, NotFound, PluginError, Unavailable
from hpc_host import _ops, errors
from hpc_host.errors import error_from_cli


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_spec_is_invalid_request(site: Site, transport: str) -> None:
    client = site.client(transport=transport)
    with pytest.raises(InvalidRequest) as e:
        client.submit({"execution_command": ["true"], "no_such_field": 1})
    assert "no_such_field" in e.value.message
    assert not e.value.retryable
    with pytest.raises(InvalidRequest):
        client.submit({"execution_command": []})
    # SLURM refuses a resource key off its guarded list, before any sbatch.
    site.slurm()
    slurm = site.client(transport=transport)
    with pytest.raises(InvalidRequest) as e:
        slurm.submit(hpc_host.JobSpec(["true"], resource_requirements={"partition": "x"}))
    assert "partition" in e.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_id_is_not_found(site: Site, transport: str) -> None:
    client = site.client(transport=transport)
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFound) as e:
        client.status(unknown)
    assert e.value.kind == "not-found"
    with pytest.raises(NotFound):
        client.logs(unknown)
    site.slurm()
    with pytest.raises(NotFound):
        site.backend(transport=transport).get_status("2147480000")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_denied_by_policy(site: Site, transport: str) -> None:
    # The Kubernetes plugin with no namespace granted: refused at load by the policy.
    site.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "kubernetes")
    client = site.client(transport=transport)
    with pytest.raises(Denied) as e:
        client.status("some-job")
    assert "k8s_namespaces" in e.value.message
    assert isinstance(e.value, PermissionError)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_backend_down_is_unavailable(site: Site, transport: str) -> None:
    # A Redis nobody listens on: the local backend's store is down.
    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site.set("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    site.set("CCAT_WORKFLOW_MANAGER_HPC_REDIS_ALLOW_UNAUTHENTICATED", "true")
    client = site.client(transport=transport)
    with pytest.raises(Unavailable) as e:
        client.submit(hpc_host.JobSpec(["true"]))
    assert e.value.retryable
    assert "redis" in str(e.value).lower(), e.value


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_broken_plugin_is_plugin_error(site: Site, transport: str) -> None:
    plugins = site.home / ".local" / "share" / "hpc-host" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "broken.wasm").write_bytes(b"\0asm not really a component")
    client = site.client(transport=transport, backend="broken")
    with pytest.raises(PluginError) as e:
        client.status("x")
    assert "broken" in e.value.message


def test_no_daemon_without_autostart_is_unavailable(site: Site) -> None:
    client = site.client(autostart=False)
    with pytest.raises(Unavailable) as e:
        client.status("x")
    assert site.socket in str(e.value)
    assert site.daemons() == []


def test_missing_binary_is_a_clear_error(site: Site) -> None:
    client = site.client(transport="cli", binary=str(site.home / "nope"))
    with pytest.raises(Unavailable) as e:
        client.status("x")
    assert "nope" in str(e.value)


def test_cli_exit_codes_map_to_kinds() -> None:
    assert isinstance(error_from_cli(2, "error: bad spec"), InvalidRequest)
    assert isinstance(error_from_cli(4, "error: plugin `k` refused: no"), Denied)
    e = error_from_cli(3, "error: plugin `local`: get-status: not-found: no job `x`")
    assert isinstance(e, NotFound) and e.message.endswith("no job `x`")
    e = error_from_cli(3, "error: plugin `slurm`: submit: unavailable: slurmctld down")
    assert isinstance(e, Unavailable) and e.retryable
    e = error_from_cli(3, "error: plugin `x` failed in `submit`: trap")
    assert isinstance(e, PluginError)
    # A hint after the error stays in the message.
    e = error_from_cli(2, "error: unknown key `FOO`\n\nhint: remove it")
    assert "hint: remove it" in e.message
    # Every one is an HpcHostError.
    assert all(
        isinstance(error_from_cli(c, "error: x"), hpc_host.HpcHostError) for c in (2, 3, 4, 9)
    )


def test_installed_command_runs() -> None:
    # The wheel put `hpc-host` beside the interpreter (or HPC_HOST_BIN names one).
    p = subprocess.run([hpc_host.find_binary(), "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("hpc-host "), p


def installed_kinds() -> list[dict[str, Any]]:
    """The error-kind table the installed package ships (the one the Rust
    host's unit test compares its own table to)."""
    text = resources.files("hpc_host").joinpath("error_kinds.json").read_text("utf-8")
    kinds: list[dict[str, Any]] = json.loads(text)["kinds"]
    return kinds


def test_every_kind_of_the_table_has_its_class_and_retryable_flag() -> None:
    kinds = installed_kinds()
    assert {k["kind"] for k in kinds} >= {"invalid-request", "not-found", "internal"}
    classes = {}
    for row in kinds:
        e = errors.error_from_kind(row["kind"], "boom")
        assert (e.kind, e.retryable, e.message) == (row["kind"], row["retryable"], "boom"), row
        # A class of its own, except `internal`: HpcHostError itself.
        cls = errors.class_of(row["kind"])
        assert type(e) is cls and cls.kind == row["kind"] and cls.retryable == row["retryable"]
        assert (cls is HpcHostError) == (row["kind"] == "internal"), cls
        classes[row["kind"]] = cls
    # Every public exception of a kind stands for one row of the table.
    public = {InvalidRequest, NotFound, Denied, Unavailable, PluginError, HpcHostError}
    assert set(classes.values()) == public
    assert {r["kind"]: r["exit_code"] for r in kinds} == {
        k: v.exit_code for k, v in errors.KINDS.items()
    }


def test_cli_exit_codes_and_http_statuses_map_as_the_table_says() -> None:
    kinds = installed_kinds()
    for row in kinds:
        kind, code = row["kind"], row["exit_code"]
        shared = [r["kind"] for r in kinds if r["exit_code"] == code]
        # The CLI names the kind in its message: that kind, if the code allows it.
        named = error_from_cli(code, f"error: plugin `p`: submit: {kind}: boom")
        assert named.kind == kind and isinstance(named, errors.class_of(kind)), (row, named)
        # A message that names none: the code's only kind, else `internal`.
        bare = error_from_cli(code, "error: something failed")
        assert bare.kind == (shared[0] if len(shared) == 1 else "internal"), (row, bare)
        # The daemon's answer: its error object, or the bare status.
        body = {"error": {"kind": kind, "message": "boom", "exit_code": code}}
        with pytest.raises(errors.class_of(kind)) as e:
            _ops.answer(httpx.Response(row["http_status"], json=body))
        assert e.value.kind == kind
        with pytest.raises(errors.class_of(kind)) as e:
            _ops.answer(httpx.Response(row["http_status"], text="bad gateway"))
        assert e.value.kind == kind and e.value.retryable == row["retryable"]
    # A code outside the table (a crash, a signal) is retryable `unavailable`.
    assert all(c not in {r["exit_code"] for r in kinds} for c in (-9, 101))
    assert isinstance(error_from_cli(-9, ""), Unavailable)
    assert isinstance(error_from_cli(101, "thread 'main' panicked"), Unavailable)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wait_timeout_says_the_same_from_both_clients(site: Site, transport: str) -> None:
    import asyncio

    client = site.client(transport=transport)
    job = client.submit(hpc_host.JobSpec(["sleep", "30"]))
    try:
        with pytest.raises(hpc_host.WaitTimeout) as sync:
            client.wait([job], timeout=0.5)

        async def wait_async() -> None:
            async with site.aclient(transport=transport) as aclient:
                await aclient.wait(job, timeout=0.5)

        with pytest.raises(hpc_host.WaitTimeout) as aio:
            asyncio.run(wait_async())
        for e in (sync.value, aio.value):
            assert e.message == "1 of 1 jobs still running after 0.5 s", e.message
            assert [(j.job_id, j.is_final) for j in e.jobs] == [(job, False)], e.jobs
            assert e.retryable
    finally:
        client.cancel(job)
