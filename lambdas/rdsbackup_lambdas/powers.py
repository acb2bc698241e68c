"""Which role a step assumes for each power (one role per power: infra.powers, docs/security.md).

The policies name each place's read role (``access_role_arn``) and each replica target's replica role;
a power's role lives next to it in the same account, named ``<prefix>-<power>-<region>`` (the deployment's
name prefix, ``rdsbackup`` by default: infra.topology.Names). Deriving the
names here keeps every item small (one ARN, not one per power); an infra test holds these names and
the synthesized roles together. A role named otherwise (a single role a user supplies) is used as is.
"""

from __future__ import annotations

import re

READ = "read"
SNAPSHOT = "snapshot"
SHARE = "share"
DELETE = "delete"
LAUNCH = "launch"
REPLICA = "replica"
REPLICA_DELETE = "replica-delete"

# head: everything up to the power (the deployment's prefix, which may contain hyphens); region: an AWS region
_OURS = re.compile(r"^(?P<head>arn:[^:]+:iam::\d{12}:role/[a-z][a-z0-9-]*?-)(?P<power>read|replica)"
                   r"-(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)$")
_POWERS_BY_BASE = {READ: {READ, SNAPSHOT, SHARE, DELETE, LAUNCH}, REPLICA: {REPLICA, REPLICA_DELETE}}


def role_for(base_role_arn: str | None, power: str, region: str | None = None) -> str | None:
    """The role of ``power`` beside ``base_role_arn`` (a read or replica role), or the base itself.

    ``region``: the power's role of the same account in another region (roles act in their own region).
    """
    if not base_role_arn:
        return base_role_arn
    match = _OURS.match(base_role_arn)
    if match is None:
        return base_role_arn
    base = match.group("power")
    if power not in _POWERS_BY_BASE[base]:
        raise ValueError(f"power {power!r} has no role beside {base_role_arn} (a {base} role)")
    return f"{match.group('head')}{power}-{region or match.group('region')}"
