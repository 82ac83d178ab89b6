"""The helper library."""

from __future__ import annotations

import pytest
from componentize_py_types import Err
from wit_world.imports import kv, process
from wit_world.imports.ccat_hpc_types_0_1_0 import (
    BackendError_Internal,
    BackendError_InvalidRequest,
    BackendError_NotFound,
    BackendError_Unavailable,
)

from hpc_plugin import apptainer, ids, records, spec
from hpc_plugin.errors import BackendFailure, to_backend_error


def test_keyed_ids_match_the_rust_local_backend() -> None:
    # uuid::Builder::from_random_bytes(sha256("abc")[..16]) in plugins/local
    # sha256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 …, version nibble 4, variant 10xx
    k = ids.keyed_id("abc")
    assert k == "ba7816bf-8f01-4fea-8141-40de5dae2223"
    assert ids.keyed_id("abc") == k != ids.keyed_id("abd")
    assert ids.digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ids.parse_id(k.upper()) == k and ids.parse_id("nope") is None


def test_errors_map_like_the_rust_sdk() -> None:
    assert to_backend_error(Err(process.ProcessError_NotFound("x"))) == BackendError_NotFound("x")
    assert to_backend_error(Err(process.ProcessError_TimedOut("x"))) == BackendError_Unavailable("x")
    assert to_backend_error(Err(kv.KvError_Unavailable("down"))) == BackendError_Unavailable("job store: down")
    assert to_backend_error(Err(kv.KvError_Invalid("big"))) == BackendError_InvalidRequest("big")
    assert to_backend_error(KeyError("y")) == BackendError_Internal("KeyError: 'y'")


def test_records_refuse_garbage_as_internal() -> None:
    assert records.decode(records.encode({"a": 1})) == {"a": 1}
    for bad in [b"{", b"[1]", b"\xff"]:
        with pytest.raises(BackendFailure) as e:
            records.decode(bad)
        assert isinstance(e.value.error, BackendError_Internal)


def test_hours_round_up_without_float_noise() -> None:
    assert spec.hours_to_seconds(1.5) == 5400
    assert spec.hours_to_seconds(1.1) == 3960
    assert spec.hours_to_seconds(0.0001) == 1
    for bad in [0.0, -1.0, float("nan"), float("inf"), 1e300]:
        with pytest.raises(BackendFailure):
            spec.hours_to_seconds(bad)


def test_apptainer_wrap() -> None:
    assert apptainer.wrap("/opt/a", "/i.sif", [("a", "/x"), ("b", "/x"), ("c", None)], ["true"]) == [
        "/opt/a", "exec", "--bind", "/x", "/i.sif", "true"]
    for sif, mounts in [("img.sif", []), ("/i.sif", [("o", "/a,b")]), ("/i.sif", [("o", "rel")])]:
        with pytest.raises(BackendFailure):
            apptainer.wrap("apptainer", sif, mounts, ["true"])
    assert apptainer.container_env([("P", "1")]) == [("P", "1"), ("APPTAINERENV_P", "1")]
