"""Turns a validated config into the app's stacks: control, production access, replica targets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aws_cdk import App, Aws, Environment, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import BackupConfig
from infra.stacks.access_stacks import ProductionAccessStack, ReplicaTargetStack
from infra.stacks.control_stack import ControlStack
from infra.topology import Place, Topology, build_topology


@dataclass
class BackupApp:
    control: ControlStack
    access: dict[Place, ProductionAccessStack]
    replicas: dict[Place, ReplicaTargetStack]
    topology: Topology

    @property
    def stacks(self) -> list[Stack]:
        return [self.control, *self.access.values(), *self.replicas.values()]


def control_place(config: BackupConfig) -> tuple[Place, bool]:
    """The control account/region from config, else the CLI's defaults, else CloudFormation's own
    (an env-agnostic single-account synth). The flag says whether the place is concrete."""
    account = config.control.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = config.control.region or os.environ.get("CDK_DEFAULT_REGION")
    if account and region:
        return Place(account, region), True
    return Place(account or Aws.ACCOUNT_ID, region or Aws.REGION), False


def _stack_id(prefix: str, place: Place, concrete: bool, single: bool) -> str:
    return prefix if single or not concrete else f"{prefix}-{place.account}-{place.region}"


def build_app(app: App, config: BackupConfig) -> BackupApp:
    """Instantiate every stack the config needs, with cdk-nag's AwsSolutions checks."""
    control, concrete = control_place(config)
    topology = build_topology(config, control=control)
    if not concrete and (len(topology.access_places) > 1 or topology.replica_places):
        needs = "replication" if topology.replica_places else "several accounts or regions"
        raise ValueError(f"the config uses {needs}: set control.account and control.region in the config "
                         "(or run with AWS credentials so CDK_DEFAULT_ACCOUNT/REGION are known)")

    def env(place: Place) -> Environment | None:
        return Environment(account=place.account, region=place.region) if concrete else None

    control_stack = ControlStack(app, "RdsBackupControl", config=config, topology=topology,
                                 env=env(control), description="rds-backup control plane")
    single_access = topology.access_places == (control,)
    access = {}
    for place in topology.access_places:
        share_with = [p.account for p in topology.replica_places if p.account != place.account]
        access[place] = ProductionAccessStack(
            app, _stack_id("RdsBackupAccess", place, concrete, single_access),
            control_account=control.account, share_with_accounts=share_with, env=env(place),
            description="rds-backup production access (role the control plane assumes)")
    replicas = {}
    source_accounts = sorted({p.account for p in topology.access_places})
    for place in topology.replica_places:
        replicas[place] = ReplicaTargetStack(
            app, _stack_id("RdsBackupReplica", place, concrete, False),
            control_account=control.account, source_accounts=source_accounts, env=env(place),
            description="rds-backup replica target (role and key for snapshot copies)")
    for stack in [control_stack, *access.values(), *replicas.values()]:
        Tags.of(stack).add("rdsbackup:component", "rds-backup")
    # cdk-nag 3 is a validation plugin (an Aspect fails in v3); any unsuppressed finding fails synth.
    Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True))
    return BackupApp(control=control_stack, access=access, replicas=replicas, topology=topology)
