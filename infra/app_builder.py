"""Turns a validated config into the app's stacks: control, production access, replica targets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aws_cdk import Annotations, App, Aws, Environment, Stack, Tags, Token, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import BackupConfig
from infra.constructs.power_roles import SelectedDatabases, Trust
from infra.nag import add_compliance_packs
from infra.stacks.access_stacks import ProductionAccessStack, ReplicaTargetStack, WorkerSettingsForPlace
from infra.stacks.control_stack import ControlStack
from infra.topology import NAMES_CONTEXT, Place, Topology, build_topology, repository_prefix, test_worker_of


@dataclass
class BackupApp:
    control: ControlStack
    access: dict[Place, ProductionAccessStack]
    replicas: dict[Place, ReplicaTargetStack]
    topology: Topology

    @property
    def stacks(self) -> list[Stack]:
        return [self.control, *self.access.values(), *self.replicas.values()]


def control_place(config: BackupConfig) -> Place:
    """The control account/region from config, else the CLI's defaults, else CloudFormation's own
    pseudo parameters (an env-agnostic, single-account synth, e.g. `cdk synth` with no credentials)."""
    account = config.control.account or os.environ.get("CDK_DEFAULT_ACCOUNT") or Aws.ACCOUNT_ID
    region = config.control.region or os.environ.get("CDK_DEFAULT_REGION") or Aws.REGION
    return Place(account, region)


def _env(place: Place) -> Environment:
    return Environment(account=None if Token.is_unresolved(place.account) else place.account,
                       region=None if Token.is_unresolved(place.region) else place.region)


def _stack_id(kind: str, place: Place, topology: Topology) -> str:
    prefix = topology.names.stack_prefix + kind
    if place == topology.control:
        return prefix
    parts = [part for part in (place.account, place.region) if not Token.is_unresolved(part)]
    return "-".join([prefix, *parts])


def _worker_settings(config: BackupConfig, topology: Topology, place: Place) -> WorkerSettingsForPlace | None:
    if place not in topology.worker_places:
        return None
    here = [p for p in config.policies if place in topology.sources_of(p)]
    policies = [p for p in here if p.image_backup is not None]
    # snapshot-only policies' restore tests: their test worker writes only result documents
    testers = [(p, worker) for p in here if (worker := test_worker_of(p)) is not None]
    return WorkerSettingsForPlace(
        repository_buckets=sorted({topology.names.repository_bucket(p.image_backup.repository, topology.control)
                                   for p in policies}
                                  | {topology.names.repository_bucket(w.results_repository, topology.control)
                                     for _, w in testers}),
        control_region=topology.control.region,
        secret_arns=sorted({p.image_backup.secret_arn for p in policies if p.image_backup.secret_arn}
                           | {w.secret_arn for _, w in testers if w.secret_arn}),
        capacity_providers=sorted({p.image_backup.worker.capacity_provider for p in policies
                                   if p.image_backup.worker.capacity_provider}
                                  | {w.capacity_provider for _, w in testers if w.capacity_provider}),
        repository_prefixes=sorted({(topology.names.repository_bucket(p.image_backup.repository, topology.control),
                                     repository_prefix(p.name)) for p in policies}),
        archive_prefixes=sorted({(topology.names.repository_bucket(p.archive.repository, topology.control),
                                  repository_prefix(p.name)) for p in policies if p.archive is not None}),
        secret_sources=_named_sources(policies + [p for p, _ in testers], place),
        # restore tests' throwaways carry the restore tag: the launch role reaches them without naming them
        databases=_selected_databases(policies, place),
    )


def _selected_databases(policies: list, place: Place) -> SelectedDatabases:
    """The databases the policies may select in this place, as the launch and restore roles may modify
    them: by ARN where the config names them, by their tags where it selects by tags (the Lambdas' mirror:
    rdsbackup_lambdas.restore.replaceable)."""
    named, tag_sets = set(), []
    for policy in policies:
        for resource in policy.selection.resources:
            # RDS stores identifiers (and so ARNs) in lowercase
            if not resource.startswith("arn:"):
                named.update(f"{kind}:{resource.lower()}" for kind in ("db", "cluster"))
                continue
            _, _, _, region, account, kind, identifier = resource.split(":", 6)
            if (account, region) == (place.account, place.region):
                named.add(f"{kind}:{identifier.lower()}")
        if policy.selection.tags and policy.selection.tags not in tag_sets:
            tag_sets.append(dict(policy.selection.tags))
    return SelectedDatabases(resources=sorted(named), tag_sets=tag_sets)


def _named_sources(policies: list, place: Place) -> list[str] | None:
    """ARNs of the databases the policies name in this place (instance and cluster forms of a bare id),
    or None when a policy selects by tags (the databases are known only at run time)."""
    if any(p.selection.tags for p in policies):
        return None
    arns = set()
    for policy in policies:
        for resource in policy.selection.resources:
            if resource.startswith("arn:"):
                arns.add(resource)
            else:
                here = f"arn:aws:rds:{place.region}:{place.account}"
                arns.update(f"{here}:{kind}:{resource}" for kind in ("db", "cluster"))
    return sorted(arns)


SAME_ACCOUNT_WARNING = "rdsbackup:same-account"


def _warn_where_backups_share_the_account(config: BackupConfig, topology: Topology, stack: Stack) -> None:
    """A replica or repository in the account it protects falls with that account (docs/security.md)."""
    for policy in config.policies:
        for source in topology.sources_of(policy):
            if policy.replication is not None and (policy.replication.account or source.account) == source.account:
                Annotations.of(stack).add_warning_v2(SAME_ACCOUNT_WARNING, (
                    f'policy "{policy.name}": replicas of account {source.account} stay in that account; an admin '
                    "(or attacker) there can delete them with the originals. Replicate into a vault account "
                    "(replication.account)."))
            if policy.image_backup is not None and len({s.account for s in topology.sources_of(policy)}) > 1:
                Annotations.of(stack).add_warning_v2(SAME_ACCOUNT_WARNING, (
                    f'policy "{policy.name}": its production accounts share one repository prefix, so each '
                    "account's worker can read the others' restore points. Use one policy per account."))
            if policy.image_backup is not None and source.account == topology.control.account:
                Annotations.of(stack).add_warning_v2(SAME_ACCOUNT_WARNING, (
                    f'policy "{policy.name}": the repository is in the account it protects ({source.account}); '
                    "its admin can reach the backups. Deploy the control stack in a separate backup account."))


def build_app(app: App, config: BackupConfig) -> BackupApp:
    """Instantiate every stack the config needs, with cdk-nag's AwsSolutions checks."""
    # Server access logs delivered through a bucket policy rather than the legacy ACL (in every synth,
    # not only `cdk synth` with cdk.json's flags).
    app.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
    # A Distributed Map's result writer is rendered only with this flag (the older writer is deprecated).
    app.node.set_context("@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2", True)
    # every construct names its resources from the prefix (infra.topology.names_of)
    app.node.set_context(NAMES_CONTEXT, config.deployment.name_prefix)
    control = control_place(config)
    topology = build_topology(config, control=control)
    accounts = {place.account for place in (*topology.access_places, *topology.replica_places)}
    if Token.is_unresolved(control.account) and accounts != {control.account}:
        raise ValueError("the config reaches other accounts: set control.account in the config (or run with "
                         "AWS credentials so CDK_DEFAULT_ACCOUNT is known)")

    control_stack = ControlStack(app, topology.names.control_stack, config=config, topology=topology,
                                 env=_env(control), description="rds-backup control plane")
    trust = Trust(control=control, organization_id=config.control.organization_id, names=topology.names)
    access = {}
    for place in topology.access_places:
        share_with = [p.account for p in topology.replica_places if p.account != place.account]
        access[place] = ProductionAccessStack(
            app, _stack_id("Access", place, topology),
            trust=trust, share_with_accounts=share_with, env=_env(place),
            worker=_worker_settings(config, topology, place), forward_to_control=place != control,
            restore_databases=_selected_databases(
                [p for p in config.policies if place in topology.sources_of(p)], place),
            description="rds-backup production access (roles the control plane assumes, one per power)")
    replicas = {}
    source_accounts = sorted({p.account for p in topology.access_places})
    for place in topology.replica_places:
        replicas[place] = ReplicaTargetStack(
            app, _stack_id("Replica", place, topology),
            trust=trust, source_accounts=source_accounts, env=_env(place),
            restore_role=place not in topology.access_places, forward_to_control=place != control,
            description="rds-backup replica target (role and key for snapshot copies)")
    for stack in [control_stack, *access.values(), *replicas.values()]:
        # not the dashboard: the pinned cfn-lint's resource spec (make security) has no Tags on it yet
        Tags.of(stack).add("rdsbackup:component", "rds-backup", exclude_resource_types=["AWS::CloudWatch::Dashboard"])
    _warn_where_backups_share_the_account(config, topology, control_stack)
    # cdk-nag 3 is a validation plugin (an Aspect fails in v3); any unsuppressed finding fails synth.
    Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True))
    if app.node.try_get_context("rdsbackup:compliance-packs") in (True, "true"):
        add_compliance_packs(app)
    return BackupApp(control=control_stack, access=access, replicas=replicas, topology=topology)
