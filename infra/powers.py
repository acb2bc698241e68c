"""Powers: what the control plane may do in a production or replica-target account, one role per power.

A compromised Lambda (or a bug in one) reaches only the powers its step needs: the step that checks a
snapshot cannot delete one, the step that tags cannot share. Each power is a role in the account and
region it acts in, named `<prefix>-<power>-<region>` (prefix `rdsbackup` by default: `infra.topology.Names`),
and trusts only the control stack's step roles that `STEP_POWERS` gives it (by `aws:PrincipalArn`, never
the control account's root).

The Lambdas find a power's role next to the read role the policies name (see
`rdsbackup_lambdas.powers`, which must derive the same names: a test holds them together).
"""

from __future__ import annotations

from enum import StrEnum

from infra.topology import Names, Place, Topology


class Power(StrEnum):
    """One role each. Production account: READ..LAUNCH (and RESTORE); replica target: REPLICA*."""

    READ = "read"                      # describe/list databases and snapshots, read tags
    SNAPSHOT = "snapshot"              # create snapshots of selected databases and tag them
    SHARE = "share"                    # copy (staging) and share managed snapshots with the target accounts
    DELETE = "delete"                  # delete managed snapshots (retention only)
    LAUNCH = "launch"                  # the image-level worker: security groups, RunTask, temporary bucket
    # restore snapshots into new databases, rename the original aside (infra.constructs.restore_role);
    # in every production and replica place
    RESTORE = "restore"
    REPLICA = "replica"                # replica target: copy replicas in and tag them
    REPLICA_DELETE = "replica-delete"  # replica target: delete managed replicas (retention only)


PRODUCTION_POWERS = (Power.READ, Power.SNAPSHOT, Power.SHARE, Power.DELETE, Power.LAUNCH)
REPLICA_POWERS = (Power.REPLICA, Power.REPLICA_DELETE)

# The only place that says which Lambda may assume which role. A step missing here assumes nothing.
STEP_POWERS: dict[str, frozenset[Power]] = {
    "resolve_policy": frozenset({Power.READ}),
    "create_snapshot": frozenset({Power.SNAPSHOT}),
    "check_snapshot": frozenset({Power.READ}),
    "tag_snapshot": frozenset({Power.SNAPSHOT}),
    "replicate_snapshot": frozenset({Power.SHARE, Power.REPLICA}),
    "apply_retention": frozenset({Power.DELETE, Power.REPLICA_DELETE}),
    "prepare_worker": frozenset({Power.LAUNCH}),
    "start_worker": frozenset({Power.LAUNCH}),
    "check_worker": frozenset({Power.LAUNCH}),
    "cleanup_worker": frozenset({Power.LAUNCH}),
    "sweep_orphans": frozenset({Power.LAUNCH}),
    "check_rpo": frozenset({Power.READ}),
    # the restore workflow (issue 12) and the restore tests (issue 15)
    "plan_restore": frozenset({Power.RESTORE}),
    "rename_original": frozenset({Power.RESTORE}),
    "restore_snapshot": frozenset({Power.RESTORE}),
    "create_cluster_instances": frozenset({Power.RESTORE}),
    "check_restore": frozenset({Power.RESTORE}),
    "cleanup_restore": frozenset({Power.RESTORE}),
    "restore_report": frozenset({Power.RESTORE}),
    "copy_snapshot": frozenset({Power.RESTORE}),
    "remove_snapshot_copy": frozenset({Power.RESTORE}),
    "plan_restore_test": frozenset({Power.READ}),
    # the test worker's groups and (SQL Server) the temporary bucket, as prepare_worker
    "prepare_restore_test": frozenset({Power.LAUNCH}),
    "locate_throwaway": frozenset({Power.READ}),
    "delete_throwaway": frozenset({Power.RESTORE}),
}


def power_role_name(power: Power, region: str, names: Names) -> str:
    return names(power.value, region)


def power_role_arn(power: Power, place: Place, names: Names) -> str:
    return names.role_arn(place, power_role_name(power, place.region, names))


def step_role_name(handler: str, region: str, names: Names) -> str:
    """The control stack's role of a step (named, so roles in other accounts can trust it by ARN)."""
    return names("step", handler.replace("_", "-"), region)


def step_role_arn(handler: str, control: Place, names: Names) -> str:
    return names.role_arn(control, step_role_name(handler, control.region, names))


def steps_with(power: Power) -> list[str]:
    return sorted(step for step, powers in STEP_POWERS.items() if power in powers)


def trusted_principals(power: Power, control: Place, names: Names) -> list[str]:
    """The step roles of the control stack that may assume `power`'s role."""
    return [step_role_arn(step, control, names) for step in steps_with(power)]


def role_arns_for(powers: frozenset[Power], topology: Topology) -> list[str]:
    """The roles of `powers` in every place where the app deploys them."""
    places = {
        **{power: topology.access_places for power in PRODUCTION_POWERS},
        Power.LAUNCH: topology.worker_places,
        **{power: topology.replica_places for power in REPLICA_POWERS},
        Power.RESTORE: topology.restore_places,
    }
    return sorted(power_role_arn(power, place, topology.names) for power in powers for place in places.get(power, ()))
