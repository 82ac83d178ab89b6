"""Job ids: random UUIDs, or for a keyed submit the UUID made from the
key's sha256, so every submit with a key names the same job (the Rust
`local` backend derives the same id from the same key)."""

from __future__ import annotations

import hashlib
import uuid


def digest(key: str) -> str:
    """The key's sha256 in hex, for schedulers whose names or labels are
    shorter than a key may be."""
    return hashlib.sha256(key.encode()).hexdigest()


def keyed_id(idempotency_key: str) -> str:
    """The job id a keyed submit makes: a version-4 UUID whose random bits
    are the first 16 bytes of sha256(key)."""
    raw = hashlib.sha256(idempotency_key.encode()).digest()[:16]
    return str(uuid.UUID(bytes=raw, version=4))


def new_id() -> str:
    return str(uuid.uuid4())


def parse_id(job_id: str) -> str | None:
    """The canonical form of a job id, or None when it cannot be one of ours."""
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        return None
