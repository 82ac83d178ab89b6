"""Job records in kv, as JSON objects, with errors instead of exceptions
escaping as traps."""

from __future__ import annotations

import json
from typing import Any

from .errors import internal
from .host import Host


def encode(record: dict[str, Any]) -> bytes:
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise internal(f"cannot encode a job record: {e}") from e


def decode(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise internal(f"not a job record: {e}") from e
    if not isinstance(value, dict):
        raise internal("not a job record: not a JSON object")
    return value


class Records:
    """Records under `<prefix><id>` in the plugin's own kv namespace."""

    def __init__(self, host: Host, prefix: str = "job/") -> None:
        self.host = host
        self.prefix = prefix

    def key(self, job_id: str) -> str:
        return self.prefix + job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        data = self.host.kv_get(self.key(job_id))
        return None if data is None else decode(data)

    def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        if not job_ids:
            return []
        found = self.host.kv_get_many([self.key(j) for j in job_ids])
        return [None if d is None else decode(d) for d in found]

    def put(self, job_id: str, record: dict[str, Any]) -> None:
        self.host.kv_set(self.key(job_id), encode(record))

    def put_quietly(self, job_id: str, record: dict[str, Any]) -> None:
        """Best effort (caching a job's end): a store that is down now loses nothing."""
        try:
            self.put(job_id, record)
        except Exception:  # noqa: BLE001 - the supervisor still has the end
            pass

    def delete(self, job_id: str) -> bool:
        return self.host.kv_delete(self.key(job_id))
