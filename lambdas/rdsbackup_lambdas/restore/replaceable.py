"""Which databases mode "replace" may rename in one account and region.

The restore role may call ``ModifyDBInstance``/``ModifyDBCluster`` (the rename) only on the databases
the policies may select there, on the names the renamed originals and a named cluster's members carry,
and on what a restore made (``infra.constructs.power_roles.allow_modify_selected``). This module says
the same from the shipped policies, so that the planner refuses any other target before it renames
anything: on AWS, IAM would refuse the rename itself, possibly half-way (a cluster renamed aside, one
of its instances not). ``tests/infra/test_replaceable.py`` checks both sides agree, name by name.

- Named (``selection.resources``): ``<kind>:<id>``, ``<kind>:<id>-replaced-*`` (the renamed original,
  renamed back after a failure) and, for a cluster (or a bare id, which may name one), ``db:<id>-*``
  (its members named after it, as the console names them: ``<id>-instance-1``).
- Selected by tags (``selection.tags``): any database carrying every tag of the set (``*``: any value);
  a renamed database keeps its tags.
- Made by a restore: tagged ``rdsbackup:restore = restore-*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from rdsbackup_lambdas.models import Kind
from rdsbackup_lambdas.restore.databases import RESTORE_TAG

REPLACED_INFIX = "-replaced-"


def _arn_kind(kind: Kind) -> str:
    return "db" if kind == "instance" else "cluster"


@dataclass(frozen=True)
class Replaceable:
    """The rename grant of one place: ARN patterns (``db:<id>``...) and tag sets."""

    patterns: tuple[str, ...] = ()
    tag_sets: tuple[dict[str, str], ...] = ()

    @classmethod
    def in_place(cls, policies: dict[str, Any], account: str, region: str) -> Replaceable:
        """From the policies whose selection has a target in ``account``/``region``."""
        named: set[tuple[str, str]] = set()
        tag_sets: list[dict[str, str]] = []
        for policy in policies.values():
            selection = (policy or {}).get("selection") or {}
            targets = selection.get("targets") or []
            if not any((t.get("account"), t.get("region")) == (account, region) for t in targets):
                continue
            for resource in selection.get("resources") or []:
                resource = resource.strip()
                if not resource.startswith("arn:"):
                    # RDS stores identifiers (and so ARNs) in lowercase; a bare id may name either kind
                    named.update((kind, resource.lower()) for kind in ("db", "cluster"))
                    continue
                parts = resource.split(":", 6)
                if len(parts) == 7 and (parts[4], parts[3]) == (account, region) and parts[5] in ("db", "cluster"):
                    named.add((parts[5], parts[6].lower()))
            tags = dict(selection.get("tags") or {})
            if tags and tags not in tag_sets:
                tag_sets.append(tags)
        patterns: set[str] = set()
        for kind, identifier in named:
            patterns.update({f"{kind}:{identifier}", f"{kind}:{identifier}{REPLACED_INFIX}*"})
            if kind == "cluster":
                patterns.add(f"db:{identifier}-*")
        return cls(patterns=tuple(sorted(patterns)), tag_sets=tuple(tag_sets))

    def allows(self, kind: Kind, identifier: str, tags: dict[str, str]) -> bool:
        """Whether the restore role may rename the ``kind`` named ``identifier`` that carries ``tags``."""
        name = f"{_arn_kind(kind)}:{identifier}"
        if any(fnmatchcase(name, pattern) for pattern in self.patterns):
            return True
        if any(all(key in tags and (value == "*" or tags[key] == value) for key, value in wanted.items())
               for wanted in self.tag_sets):
            return True
        return fnmatchcase(tags.get(RESTORE_TAG, ""), "restore-*")
