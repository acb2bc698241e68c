"""The damage registry: `damage/<id>` objects recording damaged blocks, lost packs and damaged restore
points, so that damage found once (by verify, a restore, repair) is contained:

- the index ignores chunk locations inside a damaged block or a lost pack, so the next backup does not
  deduplicate against them: it stores those chunks again, and then every restore point that uses the
  same chunks reads the new copy (chunk ids are content hashes);
- readers name the recorded damage instead of failing on it again;
- `repair points` records restore points that reference lost data; `list` shows them as damaged.

Each object is sealed JSON (associated data "rdsbackup damage"):
    {"time": ISO 8601, "found_by": "verify" | "restore" | "repair packs" | ...,
     "entries": [{"pack": <32 hex>, "offset": <block offset> | null (the whole pack), "problem": str}
                 | {"restore_point": <16 hex>, "problem": str}, ...]}
Writing one is best effort: a reader without write access still reports the damage, it just is not
remembered. Prune drops entries about packs that no longer exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rdsbackup.errors import MissingObject
from rdsbackup.repository.crypto import AuthenticationFailed

DAMAGE_AD = b"rdsbackup damage"


@dataclass
class DamageRegistry:
    """What the `damage/` objects record, merged."""

    blocks: dict[tuple[bytes, int], str] = field(default_factory=dict)  # (pack id, block offset) -> problem
    packs: dict[bytes, str] = field(default_factory=dict)  # pack id -> problem (the whole pack is lost)
    restore_points: dict[str, str] = field(default_factory=dict)  # restore point id -> problem
    keys: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unreadable_keys: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.blocks or self.packs)

    def problem(self, pack_id: bytes, offset: int) -> str | None:
        """The recorded problem of the block at `offset` of pack `pack_id`, if it is damaged."""
        return self.packs.get(pack_id) or self.blocks.get((pack_id, offset))

    def entries(self) -> list[dict]:
        out = [{"pack": p.hex(), "offset": None, "problem": why} for p, why in self.packs.items()]
        out += [{"pack": p.hex(), "offset": off, "problem": why} for (p, off), why in self.blocks.items()]
        out += [{"restore_point": rp, "problem": why} for rp, why in self.restore_points.items()]
        return out

    def add(self, entry: dict) -> None:
        if "restore_point" in entry:
            self.restore_points.setdefault(str(entry["restore_point"]), str(entry.get("problem", "")))
            return
        pack = bytes.fromhex(entry["pack"])
        if entry.get("offset") is None:
            self.packs.setdefault(pack, str(entry.get("problem", "")))
        else:
            self.blocks.setdefault((pack, int(entry["offset"])), str(entry.get("problem", "")))


def load_damage(backend, keys) -> DamageRegistry:
    registry = DamageRegistry()
    for key, _size in backend.list("damage/"):
        try:
            doc = json.loads(keys.open(backend.get(key), DAMAGE_AD))
            for entry in doc.get("entries", []):
                registry.add(entry)
        except MissingObject:
            continue
        except (AuthenticationFailed, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged damage record must not stop anything: the damage it named is found again.
            registry.unreadable.append(f"damage record {key} is unreadable ({exc})")
            registry.unreadable_keys.append(key)
            continue
        registry.keys.append(key)
    return registry


def record_damage(backend, keys, entries: list[dict], found_by: str) -> str | None:
    """Write one damage object; returns its key, or None (with nothing raised) if it cannot be written."""
    if not entries:
        return None
    doc = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "found_by": found_by, "entries": entries}
    key = f"damage/{os.urandom(16).hex()}"
    try:
        backend.put(key, keys.seal(json.dumps(doc).encode(), DAMAGE_AD))
    except Exception:
        return None
    return key


def rewrite_damage(backend, keys, registry: DamageRegistry, packs: set[bytes], restore_points: set[str]) -> None:
    """Keep only the entries about packs and restore points that still exist, in one object."""
    if not registry.keys and not registry.unreadable:
        return
    kept = [e for e in registry.entries()
            if ("restore_point" in e and e["restore_point"] in restore_points)
            or ("pack" in e and bytes.fromhex(e["pack"]) in packs)]
    if len(kept) == len(registry.entries()) and len(registry.keys) <= 1 and not registry.unreadable:
        return
    if kept and record_damage(backend, keys, kept, "prune") is None:
        return  # could not write the consolidated record: keep the old ones
    backend.delete_many(list(registry.keys) + registry.unreadable_keys)
