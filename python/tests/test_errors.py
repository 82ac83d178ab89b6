"""Every error kind of the host arrives as its exception, over both transports."""

from __future__ import annotations

import socket as sk
import subprocess

import pytest
from conftest import TRANSPORTS, Site

import hpc_host
from hpc_host import Denied, InvalidRequest, NotFound, PluginError, Unavailable
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
