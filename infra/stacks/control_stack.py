"""The control stack, in the backup account: state machine, Lambdas, schedules, key, table, topic."""

from __future__ import annotations

import json
import math

from aws_cdk import Aws, CfnOutput, Duration, Fn, RemovalPolicy, Stack, Token
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import BackupConfig, Policy, maintenance_of, object_lock_mode
from infra.constructs.backup_workflow import BackupWorkflow, WorkflowSteps
from infra.constructs.db_modification_watch import DbModificationWatch, watched_roles_env
from infra.constructs.dead_letters import DeadLetters
from infra.constructs.fragments import logged_state_machine
from infra.constructs.lambda_step import LambdaStep
from infra.constructs.maintenance_worker import MaintenanceWorker
from infra.constructs.maintenance_workflow import MaintenanceSteps, MaintenanceWorkflow
from infra.constructs.monitoring import Monitoring
from infra.constructs.repositories import Repositories, RepositoryWriter
from infra.constructs.restore_test_workflow import RestoreTestSteps, RestoreTestWorkflow
from infra.constructs.restore_workflow import RestoreSteps, RestoreWorkflow
from infra.durations import resource_timeout_seconds, restore_test_timeout_seconds, session_timeout_seconds
from infra.lambda_code import lambda_code
from infra.nag import acknowledge
from infra.policies_bundle import POLICIES_FILE, bundle_policies
from infra.powers import STEP_POWERS, Power, power_role_arn, role_arns_for
from infra.topology import (
    RESULT_PREFIX,
    Topology,
    repository_prefix,
    runtime_policies,
    test_worker_of,
)

# The session objects each step reads or writes (lambdas/rdsbackup_lambdas/session_store.py).
ITEMS_OBJECTS = "sessions/*/items.json"
REPORT_OBJECTS = "sessions/*/report.json"
# What DynamoDB and SNS need of a caller's key access for a CMK-encrypted table/topic.
_TABLE_KEY_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")


class ControlStack(Stack):
    """Everything that runs backups; deployed once, in the backup account."""

    def __init__(self, scope: Construct, id_: str, *, config: BackupConfig, topology: Topology, **kwargs):
        super().__init__(scope, id_, **kwargs)
        self.topology, self.names = topology, topology.names
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="rds-backup: session table, topic, logs and snapshot tag metadata")
        self.key.add_alias(self.names.key_alias("control"))
        # CloudWatch Logs, for this account's log groups only (the encryption context it always sends) and,
        # where it names on whose behalf it calls (aws:SourceArn/SourceAccount; not documented for every
        # KMS call of Logs, hence IfExists), only for them: confused-deputy protection.
        log_groups = f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:*"
        self.key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com").with_conditions(
            {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups},
             "ArnLikeIfExists": {"aws:SourceArn": log_groups},
             "StringEqualsIfExists": {"aws:SourceAccount": self.account}}))
        # Only for snapshot tag metadata: a role that may read the session table cannot read tags.
        self.tag_key = kms.Key(self, "TagKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                               description="rds-backup: snapshot tag metadata (data keys bound to each snapshot)")
        self.tag_key.add_alias(self.names.key_alias("tags"))

        # The control stack's id (a GUID CloudFormation draws at creation): the temporary buckets' names
        # digest it, so other accounts cannot predict them (lambdas/rdsbackup_lambdas/image/names.py).
        self.temp_bucket_secret = Fn.select(2, Fn.split("/", Aws.STACK_ID))
        self.table = dynamodb.Table(
            self, "Sessions",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute="ttl",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.topic = sns.Topic(self, "Failures", master_key=self.key, enforce_ssl=True,
                               display_name="rds-backup failures and warnings")
        for email in config.notification_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self.repositories = Repositories(
            self, "Repositories", repositories=config.repositories, control=topology.control,
            writers=[RepositoryWriter(policy.image_backup.repository, place, policy.name)
                     for policy in config.policies if policy.image_backup is not None
                     for place in topology.sources_of(policy)]
            + [RepositoryWriter(worker.results_repository, place, policy.name, results_only=True)
               for policy in config.policies if (worker := test_worker_of(policy)) is not None
               for place in topology.sources_of(policy)]
            + [RepositoryWriter(policy.archive.repository, place, policy.name, read_only=True)
               for policy in config.policies if policy.image_backup is not None and policy.archive is not None
               for place in topology.sources_of(policy)],
            break_glass_role_arn=config.break_glass_role_arn,
            lock_modes={name: object_lock_mode(name, settings, config)
                        for name, settings in config.repositories.items()})
        self._session_store()
        self.steps = self._steps(config, topology)
        self.sweeper = self._sweeper(config, topology)
        self.db_modification_watch = self._watch_db_modifications(topology)
        self.monitoring = self._monitoring(config, topology)
        workflow = BackupWorkflow(self, "Workflow", steps=self.steps, timing=config.timing)
        # One execution per resource: its history and payloads are one resource's, never the session's.
        self.resource_state_machine, self.resource_state_machine_logs = logged_state_machine(
            self, "ResourceBackupStateMachine", definition=workflow.resource_definition,
            log_group_id="ResourceStateMachineLogs", key=self.key,
            timeout=Duration.seconds(resource_timeout_seconds(config)),
            comment="rds-backup: one resource of a backup session (snapshot, tag, replicate, image, retention)")
        self.state_machine, self.state_machine_logs = logged_state_machine(
            self, "BackupStateMachine", definition=workflow.session_definition(
                resource_machine=self.resource_state_machine, sessions=self.sessions_bucket),
            log_group_id="StateMachineLogs", key=self.key, timeout=Duration.seconds(session_timeout_seconds(config)),
            comment="rds-backup: a backup session of a policy's databases, one resource execution each")
        # the Distributed Map reads the items and writes its results: objects under the control key
        self.key.grant(self.state_machine.role, "kms:Decrypt", "kms:GenerateDataKey")
        self.restore_steps = self._restore_steps(config, topology)
        restore = RestoreWorkflow(self, "Restore", steps=self.restore_steps, timing=config.timing)
        self.restore_state_machine, self.restore_state_machine_logs = logged_state_machine(
            self, "RestoreStateMachine", definition=restore.definition, log_group_id="RestoreStateMachineLogs",
            key=self.key, timeout=Duration.hours(24 + self._longest_retrieval_hours(config.policies)),
            comment="rds-backup: restore a snapshot into a new (or replacing) DB instance or Aurora cluster")
        self.restore_test_state_machine = self._restore_tests(config, topology)
        self._schedules(config)
        self.maintenance_state_machine = self._maintenance(config)
        for schedule in self.schedules.values():
            schedule.node.add_dependency(self.schedule_group)
        self._nag_suppressions()
        # One output per workflow, named after it; `StateMachineArn` stays the backup's for existing scripts.
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "BackupStateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "RestoreStateMachineArn", value=self.restore_state_machine.state_machine_arn)
        if self.restore_test_state_machine is not None:
            CfnOutput(self, "RestoreTestStateMachineArn", value=self.restore_test_state_machine.state_machine_arn)
        CfnOutput(self, "ResourceBackupStateMachineArn", value=self.resource_state_machine.state_machine_arn)
        CfnOutput(self, "SessionTableName", value=self.table.table_name)
        CfnOutput(self, "SessionResultsTableName", value=self.results_table.table_name)
        CfnOutput(self, "SessionsBucketName", value=self.sessions_bucket.bucket_name)
        CfnOutput(self, "FailureTopicArn", value=self.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name)

    def _session_store(self) -> None:
        """Where sessions keep what must not travel in a payload: items and full reports (S3), one result
        per resource (DynamoDB)."""
        self.sessions_bucket = s3.Bucket(
            self, "SessionsBucket", encryption=s3.BucketEncryption.KMS, encryption_key=self.key,
            bucket_key_enabled=True, enforce_ssl=True, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            removal_policy=RemovalPolicy.RETAIN, server_access_logs_bucket=self.repositories.access_logs,
            server_access_logs_prefix="sessions/",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(400)),
                             s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(2))],
        )
        self.results_table = dynamodb.Table(
            self, "SessionResults",
            partition_key=dynamodb.Attribute(name="session_id", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="resource_arn", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED, encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute="ttl", removal_policy=RemovalPolicy.RETAIN,
        )
        self._store_env = {"SESSIONS_BUCKET": self.sessions_bucket.bucket_name,
                           "RESULTS_TABLE": self.results_table.table_name}

    def _steps(self, config: BackupConfig, topology: Topology) -> WorkflowSteps:
        # The policies ship with the code: no size cap, and not changeable at run time (policies_bundle.py).
        policies = bundle_policies(runtime_policies(config, topology, self.repositories.key.key_arn))
        code = self._code = lambda_code(self, files={POLICIES_FILE: policies.text})
        policies_env = self._policies_env = policies.environment
        tag_env = {"TAG_KMS_KEY_ARN": self.tag_key.key_arn}
        timing = config.timing
        # long enough for every DependencyViolation retry of both groups
        cleanup_seconds = max(120, round(60 + 2 * timing.sg_delete_attempts * timing.sg_delete_interval_seconds))
        image_env = {"TABLE_NAME": self.table.table_name, "TEMP_BUCKET_SECRET": self.temp_bucket_secret,
                     "SG_DELETE_ATTEMPTS": str(timing.sg_delete_attempts),
                     "SG_DELETE_INTERVAL_SECONDS": str(timing.sg_delete_interval_seconds)}
        slot_env = {"TABLE_NAME": self.table.table_name,
                    "SLOT_LIMITS": json.dumps(config.limits.as_runtime(), separators=(",", ":"))}
        steps = WorkflowSteps(
            resolve_policy=LambdaStep(self, "ResolvePolicy", handler="resolve_policy", code=code,
                                      environment={**policies_env, **self._store_env},
                                      timeout=Duration.minutes(5)),
            acquire_lease=LambdaStep(self, "AcquireLease", handler="acquire_lease", code=code,
                                     environment={"TABLE_NAME": self.table.table_name}),
            create_snapshot=LambdaStep(self, "CreateSnapshot", handler="create_snapshot", code=code,
                                       environment=slot_env),
            check_snapshot=LambdaStep(self, "CheckSnapshot", handler="check_snapshot", code=code,
                                      environment=slot_env),
            tag_snapshot=LambdaStep(self, "TagSnapshot", handler="tag_snapshot", code=code,
                                    environment=tag_env),
            replicate_snapshot=LambdaStep(self, "ReplicateSnapshot", handler="replicate_snapshot",
                                          code=code, environment={**tag_env, **slot_env, **policies_env},
                                          timeout=Duration.minutes(2)),
            apply_retention=LambdaStep(self, "ApplyRetention", handler="apply_retention", code=code,
                                       environment={**tag_env, **policies_env}, timeout=Duration.minutes(5)),
            release_lease=LambdaStep(self, "ReleaseLease", handler="release_lease", code=code,
                                     environment={"TABLE_NAME": self.table.table_name, **self._store_env}),
            session_report=LambdaStep(self, "SessionReport", handler="session_report", code=code,
                                      environment={"TABLE_NAME": self.table.table_name,
                                                   "TOPIC_ARN": self.topic.topic_arn, **self._store_env},
                                      timeout=Duration.minutes(5), memory_size=1024),
            prepare_worker=LambdaStep(self, "PrepareWorker", handler="prepare_worker", code=code,
                                      environment=image_env, timeout=Duration.minutes(3)),
            start_worker=LambdaStep(self, "StartWorker", handler="start_worker", code=code),
            check_worker=LambdaStep(self, "CheckWorker", handler="check_worker", code=code),
            cleanup_worker=LambdaStep(self, "CleanupWorker", handler="cleanup_worker", code=code,
                                      environment=image_env, timeout=Duration.seconds(cleanup_seconds)),
        )
        for step in steps.__dict__.values():
            self.allow_powers(step)
        # the worker's result document lives in the repository bucket (backup account)
        for bucket in self.repositories.buckets.values():
            steps.check_worker.role.add_to_policy(iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{RESULT_PREFIX}*")]))
            bucket_id = self.get_logical_id(bucket.node.default_child)
            acknowledge(steps.check_worker.role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{RESULT_PREFIX}*]",
                        "Result documents are named per session and resource under the results prefix.")
        self.repositories.key.grant(steps.check_worker.role, "kms:Decrypt")
        for step in (steps.prepare_worker, steps.cleanup_worker):
            self.table.grant(step.role, "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
                             "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem")
            self.grant_control_key(step.role)
        # tag_snapshot writes metadata; replication reads the primary's and writes the replica's;
        # retention reads it. Nothing else may use the tag key (but the restore's plan, which reads it).
        self.grant_tag_key(steps.tag_snapshot.role, "kms:GenerateDataKey")
        self.grant_tag_key(steps.replicate_snapshot.role, "kms:GenerateDataKey", "kms:Decrypt")
        self.grant_tag_key(steps.apply_retention.role, "kms:Decrypt")
        for step in (steps.acquire_lease, steps.release_lease):
            self.table.grant(step.role, "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem")
            self.grant_control_key(step.role)
        # slots: a conditional update of one item per account-region and kind (slots.py)
        for step in (steps.create_snapshot, steps.check_snapshot, steps.replicate_snapshot, steps.release_lease):
            self.table.grant(step.role, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem")
            self.grant_control_key(step.role)
        # the session's items (resolve), each resource's result (release), the full report (report)
        self.grant_session_objects(steps.resolve_policy.role, put=ITEMS_OBJECTS)
        self.results_table.grant(steps.release_lease.role, "dynamodb:PutItem")
        self.grant_session_objects(steps.session_report.role, get=ITEMS_OBJECTS, put=REPORT_OBJECTS)
        self.results_table.grant(steps.session_report.role, "dynamodb:Query")
        self.table.grant(steps.session_report.role, "dynamodb:PutItem", "dynamodb:BatchWriteItem")
        self.grant_control_key(steps.session_report.role)
        steps.session_report.role.add_to_policy(iam.PolicyStatement(
            actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        return steps

    def _restore_steps(self, config: BackupConfig, topology: Topology) -> RestoreSteps:
        """The restore's steps: each assumes only the restore roles (<prefix>-restore-<region>)."""
        timing = config.timing
        restore_env = {
            "RESTORE_ROLES": json.dumps({f"{place.account}/{place.region}": topology.names.restore_role_arn(place)
                                         for place in topology.restore_places}, separators=(",", ":")),
            "TAG_KMS_KEY_ARN": self.tag_key.key_arn,
            "RESTORE_WAIT": json.dumps({"initial_seconds": timing.wait_initial_seconds,
                                        "max_seconds": timing.wait_max_seconds, "factor": timing.wait_factor,
                                        "timeout_seconds": timing.wait_timeout_seconds}),
        }

        def step(id_: str, handler: str, **kwargs) -> LambdaStep:
            return LambdaStep(self, id_, handler=handler, code=self._code, **kwargs)

        steps = RestoreSteps(
            # the policies say which databases mode "replace" may rename (rdsbackup_lambdas.restore.replaceable)
            plan_restore=step("PlanRestore", "plan_restore", environment={**restore_env, **self._policies_env},
                              timeout=Duration.minutes(2)),
            rename_original=step("RenameOriginal", "rename_original"),
            restore_snapshot=step("RestoreSnapshot", "restore_snapshot"),
            create_cluster_instances=step("CreateClusterInstances", "create_cluster_instances",
                                          timeout=Duration.minutes(2)),
            check_restore=step("CheckRestore", "check_restore"),
            cleanup_restore=step("CleanupRestore", "cleanup_restore", timeout=Duration.minutes(2)),
            restore_report=step("RestoreReport", "restore_report", environment={
                "TABLE_NAME": self.table.table_name, "TOPIC_ARN": self.topic.topic_arn}),
            plan_database_restore=step("PlanDatabaseRestore", "plan_database_restore",
                                       environment=self._policies_env),
            request_archive_retrieval=step("RequestArchiveRetrieval", "request_archive_retrieval",
                                           timeout=Duration.minutes(5)),
            check_archive_retrieval=step("CheckArchiveRetrieval", "check_archive_retrieval",
                                         timeout=Duration.minutes(5)),
            copy_snapshot=step("CopySnapshotForRestore", "copy_snapshot", timeout=Duration.minutes(2)),
            remove_snapshot_copy=step("RemoveSnapshotCopy", "remove_snapshot_copy"),
            prepare_worker=self.steps.prepare_worker, start_worker=self.steps.start_worker,
            check_worker=self.steps.check_worker, cleanup_worker=self.steps.cleanup_worker,
        )
        for restoring in (steps.plan_restore, steps.rename_original, steps.restore_snapshot,
                          steps.create_cluster_instances, steps.check_restore, steps.cleanup_restore,
                          steps.restore_report, steps.copy_snapshot, steps.remove_snapshot_copy):
            self.allow_powers(restoring)
        self.grant_tag_key(steps.plan_restore.role, "kms:Decrypt")
        for retrieving in (steps.request_archive_retrieval, steps.check_archive_retrieval):
            self.allow_archive_retrieval(retrieving, config)
        self.table.grant(steps.restore_report.role, "dynamodb:PutItem")
        self.grant_control_key(steps.restore_report.role)
        steps.restore_report.role.add_to_policy(iam.PolicyStatement(
            actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        return steps

    def _sweeper(self, config: BackupConfig, topology: Topology) -> LambdaStep:
        """Hourly: removes what a session could not clean up (temporary groups, tasks, buckets, leases)."""
        sweeper = LambdaStep(self, "SweepOrphans", handler="sweep_orphans", code=self._code,
                             timeout=Duration.minutes(10), environment={
                                 **self._policies_env, "TABLE_NAME": self.table.table_name,
                                 "TEMP_BUCKET_SECRET": self.temp_bucket_secret,
                                 "MAX_AGE_MINUTES": str(config.timing.sweep_after_minutes),
                                 "THROWAWAY_PREFIX": topology.names.throwaway_prefix,
                                 "SG_DELETE_ATTEMPTS": "3", "SG_DELETE_INTERVAL_SECONDS": "5"})
        self.allow_powers(sweeper)
        self.table.grant(sweeper.role, "dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:GetItem",
                         "dynamodb:Query")
        self.grant_control_key(sweeper.role)
        rule = events.Rule(self, "SweepSchedule", schedule=events.Schedule.rate(Duration.hours(1)),
                           rule_name=self.names("sweep"),
                           description="rds-backup: remove temporary resources that sessions left behind")
        # a run EventBridge could not deliver (after its retries) lands in a queue and raises an alarm
        self.sweeper_dead_letters = DeadLetters(self, "SweepDeadLetters", topic=self.topic, key=self.key,
                                                rule_name=self.names("sweep"),
                                                what="the hourly sweep of temporary resources")
        rule.add_target(targets.LambdaFunction(sweeper.function, retry_attempts=2,
                                               dead_letter_queue=self.sweeper_dead_letters.queue))
        return sweeper

    def _watch_db_modifications(self, topology: Topology) -> DbModificationWatch:
        """Alerts when the launch or restore role modifies a database beyond its job (item 4,
        docs/security.md); the other places forward their CloudTrail events here."""
        watched = {power_role_arn(Power.LAUNCH, place, self.names): "launch" for place in topology.worker_places}
        watched.update({self.names.restore_role_arn(place): "restore" for place in topology.restore_places})
        step = LambdaStep(self, "WatchDbModifications", handler="watch_db_modifications", code=self._code,
                          environment={"WATCHED_ROLES": watched_roles_env(watched),
                                       "TOPIC_ARN": self.topic.topic_arn})
        step.role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        self.grant_control_key(step.role)
        forwarding = {place.account for place in (*topology.worker_places, *topology.restore_places)}
        return DbModificationWatch(self, "DbModificationWatch", step=step, watched_roles=watched, topic=self.topic,
                                   key=self.key,
                                   forwarding_accounts=sorted(forwarding - {topology.control.account}))

    def _restore_tests(self, config: BackupConfig, topology: Topology) -> sfn.StateMachine | None:
        """The restore-test state machine (when a policy has restore_test): new steps, the worker's and the
        lease steps of the backup, and the restore state machine run as a child."""
        if not any(policy.restore_test for policy in config.policies):
            self.restore_test_steps = None
            return None
        table_env = {"TABLE_NAME": self.table.table_name}
        restore_roles = {f"{place.account}/{place.region}": topology.names.restore_role_arn(place)
                         for place in topology.restore_places}

        def step(id_: str, handler: str, **kwargs) -> LambdaStep:
            return LambdaStep(self, id_, handler=handler, code=self._code, **kwargs)

        steps = self.restore_test_steps = RestoreTestSteps(
            plan_restore_test=step("PlanRestoreTest", "plan_restore_test", timeout=Duration.minutes(5),
                                   environment={**self._policies_env, **table_env,
                                                "THROWAWAY_PREFIX": topology.names.throwaway_prefix}),
            prepare_restore_test=step("PrepareRestoreTest", "prepare_restore_test", timeout=Duration.minutes(3),
                                      environment={**table_env, "TEMP_BUCKET_SECRET": self.temp_bucket_secret}),
            locate_throwaway=step("LocateThrowaway", "locate_throwaway"),
            delete_throwaway=step("DeleteThrowaway", "delete_throwaway", environment={
                "RESTORE_ROLES": json.dumps(restore_roles, separators=(",", ":"))}),
            restore_test_report=step("RestoreTestReport", "restore_test_report", environment={
                **table_env, "TOPIC_ARN": self.topic.topic_arn}),
            start_worker=self.steps.start_worker, check_worker=self.steps.check_worker,
            cleanup_worker=self.steps.cleanup_worker, acquire_lease=self.steps.acquire_lease,
            release_lease=self.steps.release_lease,
            request_archive_retrieval=self.restore_steps.request_archive_retrieval,
            check_archive_retrieval=self.restore_steps.check_archive_retrieval,
        )
        for reaching in (steps.plan_restore_test, steps.prepare_restore_test, steps.locate_throwaway,
                         steps.delete_throwaway):
            self.allow_powers(reaching)
        self.table.grant(steps.plan_restore_test.role, "dynamodb:BatchGetItem")
        # the newest archived point of each source: the plan lists the archive's manifests
        testing_archives = self._testing_archives(config)
        if testing_archives:
            self.allow_archive_reading(steps.plan_restore_test, testing_archives, listing=("keys", "manifests"))
        # the SQL Server temporary bucket's lease and lock, as prepare_worker's (cleanup_worker releases them)
        self.table.grant(steps.prepare_restore_test.role, "dynamodb:PutItem", "dynamodb:DeleteItem",
                         "dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem")
        self.table.grant(steps.restore_test_report.role, "dynamodb:PutItem")
        for step_ in (steps.plan_restore_test, steps.prepare_restore_test, steps.restore_test_report):
            self.grant_control_key(step_.role)
        steps.restore_test_report.role.add_to_policy(iam.PolicyStatement(
            actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        workflow = RestoreTestWorkflow(self, "RestoreTest", steps=steps, restore_machine=self.restore_state_machine,
                                       timing=config.timing)
        machine, self.restore_test_state_machine_logs = logged_state_machine(
            self, "RestoreTestStateMachine", definition=workflow.definition,
            log_group_id="RestoreTestStateMachineLogs", key=self.key,
            # a test of an archived point first waits for its retrieval (archive.retrieval_timeout_hours)
            timeout=Duration.seconds(restore_test_timeout_seconds(config)),
            comment="rds-backup: restore a policy's newest backups into throwaway instances and validate them")
        return machine

    def _monitoring(self, config: BackupConfig, topology: Topology) -> Monitoring:
        """The hourly RPO check, an alarm per policy on its metric, and the dashboard."""
        check = LambdaStep(self, "CheckRpo", handler="check_rpo", code=self._code, timeout=Duration.minutes(10),
                           environment={**self._policies_env, "TABLE_NAME": self.table.table_name,
                                        "TOPIC_ARN": self.topic.topic_arn})
        self.allow_powers(check)
        self.table.grant(check.role, "dynamodb:BatchGetItem")
        self.grant_control_key(check.role)
        check.role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        acknowledge(check.role, "AwsSolutions-IAM5[Resource::*]",
                    "cloudwatch:PutMetricData has no resource-level permissions; a condition limits it to the "
                    "rdsbackup namespace. X-Ray actions likewise.")
        # CloudWatch alarms publish to the topic, which is encrypted with this key
        self.key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        return Monitoring(self, "Monitoring", policies=list(config.policies), check_rpo=check, topic=self.topic)

    def _maintenance(self, config: BackupConfig) -> sfn.StateMachine | None:
        """The backup-account session (archive, retention, prune) of every policy with image-level backup:
        its worker, steps, state machine and one schedule per policy."""
        policies = [p for p in config.policies if maintenance_of(p) is not None]
        if not policies:
            return None
        worker = MaintenanceWorker(self, "MaintenanceWorker", buckets=list(self.repositories.buckets.values()),
                                   key=self.repositories.key)
        code = self._code
        report_env = {"TABLE_NAME": self.table.table_name, "TOPIC_ARN": self.topic.topic_arn}
        steps = self.maintenance_steps = MaintenanceSteps(
            start=LambdaStep(self, "StartMaintenance", handler="start_maintenance", code=code, environment={
                **self._policies_env,
                "NETWORK_JSON": json.dumps(config.maintenance_network.model_dump(), separators=(",", ":"))}),
            check=LambdaStep(self, "CheckMaintenance", handler="check_maintenance", code=code),
            cleanup=LambdaStep(self, "CleanupMaintenance", handler="cleanup_maintenance", code=code),
            report=LambdaStep(self, "MaintenanceReport", handler="maintenance_report", code=code,
                              environment=report_env),
        )
        cluster_arn = f"arn:aws:ecs:{self.region}:{self.account}:cluster/{self.names.maintenance_cluster}"
        tasks_arn = f"arn:aws:ecs:{self.region}:{self.account}:task/{self.names.maintenance_cluster}/*"
        on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
        steps.start.role.add_to_policy(iam.PolicyStatement(
            actions=["ecs:RunTask"], conditions=on_cluster, resources=[
                f"arn:aws:ecs:{self.region}:{self.account}:task-definition/{self.names.maintenance_task_family}:*"]))
        steps.start.role.add_to_policy(iam.PolicyStatement(actions=["ecs:TagResource"], resources=[tasks_arn]))
        steps.start.role.add_to_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=[worker.task_role.role_arn,
                                                 worker.task_definition.obtain_execution_role().role_arn]))
        # ListTasks authorizes on the cluster's container instances (with the ecs:cluster condition)
        steps.start.role.add_to_policy(iam.PolicyStatement(
            actions=["ecs:ListTasks"], conditions=on_cluster,
            resources=[f"arn:aws:ecs:{self.region}:{self.account}:container-instance/{self.names.maintenance_cluster}/*"]))
        steps.start.role.add_to_policy(iam.PolicyStatement(
            actions=["ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], resources=["*"]))
        for step in (steps.check, steps.cleanup):
            step.role.add_to_policy(iam.PolicyStatement(actions=["ecs:DescribeTasks", "ecs:StopTask"],
                                                        resources=[tasks_arn]))
        for bucket in self.repositories.buckets.values():
            steps.check.role.add_to_policy(iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{RESULT_PREFIX}maintenance/*")]))
            bucket_id = self.get_logical_id(bucket.node.default_child)
            acknowledge(steps.check.role,
                        f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{RESULT_PREFIX}maintenance/*]",
                        "Result documents are named per maintenance session under the results prefix.")
        self.repositories.key.grant(steps.check.role, "kms:Decrypt")
        self.table.grant(steps.report.role, "dynamodb:PutItem")
        self.grant_control_key(steps.report.role)
        steps.report.role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        acknowledge(steps.start.role, "AwsSolutions-IAM5[Resource::*]",
                    "EC2 Describe* calls (the default VPC lookup) support no resource-level permissions.")
        task_reason = "Maintenance worker tasks get ids from ECS at run time; the cluster is named."
        for region, account in ((self.region, self.account), ("<AWS::Region>", "<AWS::AccountId>")):
            tasks = f"arn:aws:ecs:{region}:{account}:task/{self.names.maintenance_cluster}/*"
            for step in (steps.start, steps.check, steps.cleanup):
                acknowledge(step.role, f"AwsSolutions-IAM5[Resource::{tasks}]", task_reason)
            acknowledge(steps.start.role, f"AwsSolutions-IAM5[Resource::arn:aws:ecs:{region}:{account}:"
                                          f"task-definition/{self.names.maintenance_task_family}:*]",
                        "Every revision of the maintenance task definition; the family is named.")
            acknowledge(steps.start.role, f"AwsSolutions-IAM5[Resource::arn:aws:ecs:{region}:{account}:"
                                          f"container-instance/{self.names.maintenance_cluster}/*]",
                        "Listing the maintenance cluster's tasks (ecs:cluster condition); the cluster is named.")
        workflow = MaintenanceWorkflow(self, "MaintenanceWorkflow", steps=steps, timing=config.timing)
        timeout_hours = max(m.worker.timeout_minutes for m in (maintenance_of(p) for p in policies) if m) / 60 + 1
        machine, _logs = logged_state_machine(
            self, "MaintenanceStateMachine", definition=workflow.definition,
            log_group_id="MaintenanceStateMachineLogs", key=self.key, timeout=Duration.hours(round(timeout_hours)),
            comment="rds-backup: the backup-account session of a policy (archive, retention, prune)")
        CfnOutput(self, "MaintenanceStateMachineArn", value=machine.state_machine_arn)
        role = iam.Role(self, "MaintenanceSchedulerRole", assumed_by=self._scheduler_principal(),
                        description="rds-backup: EventBridge Scheduler starts backup-account sessions")
        machine.grant_start_execution(role)
        for policy in policies:
            settings = maintenance_of(policy)
            assert settings is not None
            self.schedules[f"{policy.name}-maintenance"] = scheduler.CfnSchedule(
                self, f"MaintenanceSchedule-{policy.name}",
                name=self.names(policy.name, "maintenance"), group_name=self.schedule_group_name,
                description=f"rds-backup policy {policy.name}: backup-account session (archive, retention)",
                schedule_expression=settings.schedule.expression,
                schedule_expression_timezone=settings.schedule.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED" if settings.schedule.enabled else "DISABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=machine.state_machine_arn, role_arn=role.role_arn, input=json.dumps({"policy": policy.name}),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                        maximum_event_age_in_seconds=3600, maximum_retry_attempts=3),
                ),
            )
        self._acknowledge_state_machine(machine, steps.__dict__.values())
        return machine

    @staticmethod
    def _testing_archives(config: BackupConfig) -> list[Policy]:
        """The policies whose restore tests test their newest archived points."""
        return [p for p in config.policies
                if p.archive is not None and "archived_restore_point" in p.restore_test_targets]

    @staticmethod
    def _longest_retrieval_hours(policies: list[Policy]) -> int:
        """A restore from an archive first waits for its retrieval: the restore's timeout leaves room for the
        longest of `policies`'."""
        return math.ceil(max((p.archive.retrieval_timeout_hours for p in policies if p.archive), default=0))

    def allow_archive_retrieval(self, step: LambdaStep, config: BackupConfig) -> None:
        """Open each policy's archive (its config, keys and manifests; list its keys and packs) and ask S3 to
        retrieve its packs: never read a pack, never write or delete anything."""
        archived = [policy for policy in config.policies if policy.archive is not None]
        self.allow_archive_reading(step, archived, listing=("keys", "data"))
        for policy in archived:
            assert policy.archive is not None
            bucket = self.repositories.buckets[policy.archive.repository]
            prefix = repository_prefix(policy.name)
            step.role.add_to_policy(iam.PolicyStatement(actions=["s3:RestoreObject"], resources=[
                bucket.arn_for_objects(f"{prefix}/data/*")]))
            bucket_id = self.get_logical_id(bucket.node.default_child)
            acknowledge(step.role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}/data/*]",
                        "An archive's packs are named by id under the policy's prefix; they may only be "
                        "retrieved (s3:RestoreObject), never read.")

    def allow_archive_reading(self, step: LambdaStep, policies: list[Policy], *, listing: tuple[str, ...]) -> None:
        """Open each of `policies`' archives: read its config, key documents and manifests (all STANDARD)
        and list the `listing` folders of its prefix; no pack, no write, no delete."""
        for policy in policies:
            assert policy.archive is not None
            bucket = self.repositories.buckets[policy.archive.repository]
            prefix = repository_prefix(policy.name)
            step.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[
                bucket.arn_for_objects(f"{prefix}/config"), bucket.arn_for_objects(f"{prefix}/keys/*"),
                bucket.arn_for_objects(f"{prefix}/manifests/*")]))
            step.role.add_to_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}/{folder}/*" for folder in listing]}}))
            bucket_id = self.get_logical_id(bucket.node.default_child)
            for what in ("keys", "manifests"):
                acknowledge(step.role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}/{what}/*]",
                            "An archive's key documents and manifests are named by id under the policy's prefix.")
        # the archive's master key (unwrapped directly) and its objects (read through S3)
        step.role.add_to_policy(iam.PolicyStatement(
            actions=["kms:Decrypt"], resources=[self.repositories.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}}))
        step.role.add_to_policy(iam.PolicyStatement(
            actions=["kms:Decrypt"], resources=[self.repositories.key.key_arn],
            conditions={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["rdsbackup-repository"]}}))

    def grant_control_key(self, grantee: iam.IGrantable) -> None:
        """The control key, through DynamoDB and SNS only (the session table and the topic)."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=list(_TABLE_KEY_ACTIONS), resources=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": [f"dynamodb.{self.region}.amazonaws.com",
                                                           f"sns.{self.region}.amazonaws.com"]}}))

    def grant_session_objects(self, grantee: iam.IGrantable, *, get: str | None = None,
                              put: str | None = None) -> None:
        """Exactly these objects of the sessions bucket (`get` read, `put` written), and the control key
        only through S3 for them (CDK's bucket grants would give the whole prefix, tagging, retention and
        the key directly)."""
        principal = grantee.grant_principal
        key_actions = []
        if get:
            principal.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.sessions_bucket.arn_for_objects(get)]))
            key_actions.append("kms:Decrypt")
        if put:
            principal.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.sessions_bucket.arn_for_objects(put)]))
            key_actions.append("kms:GenerateDataKey")
        principal.add_to_principal_policy(iam.PolicyStatement(
            actions=key_actions, resources=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}}))

    def grant_tag_key(self, grantee: iam.IGrantable, *actions: str) -> None:
        """The tag key, only for data keys bound to a snapshot (the encryption context TagCodec uses)."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=list(actions), resources=[self.tag_key.key_arn],
            conditions={"StringLike": {"kms:EncryptionContext:rdsbackup:snapshot": "*"}}))

    def allow_powers(self, step: LambdaStep) -> None:
        """Let a step assume the roles of the powers `STEP_POWERS` gives its handler, where they exist
        (infra.powers: one role per power; the roles trust exactly these steps)."""
        role_arns = role_arns_for(STEP_POWERS.get(step.handler, frozenset()), self.topology)
        if role_arns:
            step.role.add_to_policy(iam.PolicyStatement(actions=["sts:AssumeRole"], resources=role_arns))

    @property
    def schedule_group_name(self) -> str:
        """The deployment's own EventBridge Scheduler group (`rdsbackup-schedules` by default)."""
        return self.names("schedules")

    def _scheduler_principal(self) -> iam.ServicePrincipal:
        """EventBridge Scheduler, only for this app's schedule group in this account (confused deputy: no
        schedule of another group or account can use the role)."""
        group = f"arn:{self.partition}:scheduler:{self.region}:{self.account}:schedule-group/{self.schedule_group_name}"
        return iam.ServicePrincipal("scheduler.amazonaws.com", conditions={
            "StringEquals": {"aws:SourceAccount": self.account, "aws:SourceArn": group}})

    def _schedules(self, config: BackupConfig) -> None:
        # the app's own group: the scheduler roles trust only schedules in it
        self.schedule_group = scheduler.CfnScheduleGroup(self, "ScheduleGroup", name=self.schedule_group_name)
        role = iam.Role(self, "SchedulerRole", assumed_by=self._scheduler_principal(),
                        description="rds-backup: EventBridge Scheduler starts backup sessions")
        self.state_machine.grant_start_execution(role)
        self.schedules: dict[str, scheduler.CfnSchedule] = {}
        for policy in config.policies:
            self.schedules[policy.name] = scheduler.CfnSchedule(
                self, f"Schedule-{policy.name}",
                name=self.names(policy.name), group_name=self.schedule_group_name,
                description=f"rds-backup policy {policy.name}",
                schedule_expression=policy.schedule.expression,
                schedule_expression_timezone=policy.schedule.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED" if policy.schedule.enabled else "DISABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=self.state_machine.state_machine_arn,
                    role_arn=role.role_arn,
                    input=json.dumps({"policy": policy.name}),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                        maximum_event_age_in_seconds=3600, maximum_retry_attempts=3),
                ),
            )
            test = policy.restore_test
            if test is not None and self.restore_test_state_machine is not None:
                self.restore_test_state_machine.grant_start_execution(role)
                self.schedules[f"{policy.name}:restore-test"] = scheduler.CfnSchedule(
                    self, f"RestoreTestSchedule-{policy.name}",
                    name=self.names("test", policy.name), group_name=self.schedule_group_name,
                    description=f"rds-backup restore test of policy {policy.name}",
                    schedule_expression=test.schedule.expression,
                    schedule_expression_timezone=test.schedule.timezone,
                    flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                    state="ENABLED" if test.schedule.enabled else "DISABLED",
                    target=scheduler.CfnSchedule.TargetProperty(
                        arn=self.restore_test_state_machine.state_machine_arn, role_arn=role.role_arn,
                        input=json.dumps({"policy": policy.name}),
                        retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                            maximum_event_age_in_seconds=3600, maximum_retry_attempts=3)),
                )

    def _nag_suppressions(self) -> None:
        self._acknowledge_state_machine(self.resource_state_machine, self.steps.__dict__.values())
        self._acknowledge_state_machine(self.state_machine, self.steps.__dict__.values())
        self._acknowledge_state_machine(self.restore_state_machine, self.restore_steps.__dict__.values())
        if self.restore_test_state_machine is not None:
            self._acknowledge_state_machine(self.restore_test_state_machine,
                                            self.restore_test_steps.__dict__.values())
            # starting the restore as a child (.sync:2) reads its events through the managed rule CDK makes
            region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region
            account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
            restore_id = self.get_logical_id(self.restore_state_machine.node.default_child)
            acknowledge(self.restore_test_state_machine,
                        f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:{region}:{account}:execution:"
                        f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{restore_id}"}}]}}]}}*]',
                        "Describing and stopping the child restore executions it starts; they are named only at "
                        "run time.")
        acknowledge(self.steps.resolve_policy.role,
                    f"AwsSolutions-IAM5[Resource::<{self._bucket_id()}.Arn>/{ITEMS_OBJECTS}]",
                    "Each session's items object, named by session id (written once per session).")
        acknowledge(self.steps.session_report.role,
                    f"AwsSolutions-IAM5[Resource::<{self._bucket_id()}.Arn>/{ITEMS_OBJECTS}]",
                    "Each session's items object (read) and report object (written), named by session id.")
        acknowledge(self.steps.session_report.role,
                    f"AwsSolutions-IAM5[Resource::<{self._bucket_id()}.Arn>/{REPORT_OBJECTS}]",
                    "Each session's items object (read) and report object (written), named by session id.")

        self._acknowledge_session_machine()

    def _acknowledge_session_machine(self) -> None:
        """What CDK grants the session for its Distributed Map and the resource executions it starts."""
        executions = f"arn:<AWS::Partition>:states:{self.region}:{self.account}:execution:"

        def machine_name(machine: sfn.StateMachine) -> str:
            logical = self.get_logical_id(machine.node.default_child)
            return '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + logical + '"}]}]}'

        session, resource = machine_name(self.state_machine), machine_name(self.resource_state_machine)
        acknowledge(self.state_machine, f"AwsSolutions-IAM5[Resource::{executions}{session}:*]",
                    "The Distributed Map's own child executions (Map Runs) of this state machine.")
        acknowledge(self.state_machine, f"AwsSolutions-IAM5[Resource::{executions}{session}/*:*]",
                    "The Distributed Map's own child executions (Map Runs) of this state machine.")
        acknowledge(self.state_machine, f"AwsSolutions-IAM5[Resource::{executions}{resource}*]",
                    "Describing and stopping the resource executions this session starts (named per session).")
        bucket_objects = f"arn:<AWS::Partition>:s3:::<{self._bucket_id()}>/*"
        acknowledge(self.state_machine, f"AwsSolutions-IAM5[Resource::{bucket_objects}]",
                    "The session's items (read by the Distributed Map) and its Map Run results, in the sessions "
                    "bucket.")

    def _bucket_id(self) -> str:
        return self.get_logical_id(self.sessions_bucket.node.default_child)

    def _acknowledge_state_machine(self, machine: sfn.StateMachine, steps) -> None:
        """The wildcards CDK adds to a state machine's role: logging/tracing, and each function's versions."""
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery and X-Ray actions support no resource-level permissions (CDK "
                    "adds them for the state machine's logging and tracing).")
        for step in steps:
            function_id = self.get_logical_id(step.function.node.default_child)
            acknowledge(machine, f"AwsSolutions-IAM5[Resource::<{function_id}.Arn>:*]",
                        "CDK grants invoking the function's versions/aliases too; the function is named.")
