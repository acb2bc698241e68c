"""Names derived from the backup session, so a retried step finds what the first try made."""

from __future__ import annotations

import hashlib
import re

MAX_SNAPSHOT_ID = 255
_VALID_ID = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*(?<!-)$")


def _slug(text: str) -> str:
    """Lower-case letters, digits and single hyphens only."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower())
    return slug.strip("-")


def session_suffix(policy: str, session_id: str) -> str:
    """The part of the session id that is unique per run (the policy name is already in the name)."""
    prefix = f"{policy}-"
    return session_id[len(prefix):] if session_id.startswith(prefix) else session_id


def is_valid_snapshot_id(name: str) -> bool:
    """RDS identifier rules: letter first; letters, digits, hyphens; no ``--``; no trailing hyphen."""
    return 0 < len(name) <= MAX_SNAPSHOT_ID and bool(_VALID_ID.match(name))


def snapshot_name(policy: str, resource_id: str, session_id: str, role: str = "") -> str:
    """``rdsbackup-<policy>-<resource id>-<session suffix>[-<role>]``, a valid RDS snapshot identifier.

    RDS stores identifiers in lower case. When the name would exceed 255 characters, the policy and
    resource parts are shortened and a hash of the full name keeps it unique and stable.
    """
    suffix = _slug(session_suffix(policy, session_id)) or "session"
    tail = "-".join(p for p in (suffix, _slug(role)) if p)
    head = "-".join(p for p in ("rdsbackup", _slug(policy), _slug(resource_id)) if p)
    name = f"{head}-{tail}"
    if len(name) > MAX_SNAPSHOT_ID:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        room = MAX_SNAPSHOT_ID - len(tail) - len(digest) - 2
        name = f"{head[:room].rstrip('-')}-{digest}-{tail}"
        if len(name) > MAX_SNAPSHOT_ID:  # absurdly long session id: hash everything but the prefix
            name = f"rdsbackup-{hashlib.sha256(name.encode()).hexdigest()}"
    assert is_valid_snapshot_id(name), name
    return name
