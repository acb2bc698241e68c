"""The backup-account session's worker: an ECS cluster, the task definition that runs the `rdsbackup`
image with `maintain`, and its task role, in the control account and region. It is the only worker that
deletes repository objects (forget, prune, archive retention); production workers only append."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.worker_cluster import WORKER_IMAGE_DIR
from infra.nag import acknowledge
from infra.topology import REPOSITORY_OWNER_ENV, WORKER_CONTAINER, names_of


class MaintenanceWorker(Construct):
    """Cluster + Fargate task definition + task role (the repositories' objects and key, nothing else)."""

    def __init__(self, scope: Construct, id_: str, *, buckets: list[s3.IBucket], key: kms.IKey):
        super().__init__(scope, id_)
        names = names_of(self)
        self.cluster = ecs.CfnCluster(
            self, "Cluster", cluster_name=names.maintenance_cluster,
            cluster_settings=[ecs.CfnCluster.ClusterSettingsProperty(name="containerInsights", value="enabled")],
            capacity_providers=["FARGATE"],
        )
        self.task_role = iam.Role(self, "TaskRole", role_name=names.maintenance_role,
                                  assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                  description="rds-backup maintenance worker: archive, retention and prune "
                                              "of the repositories")
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", family=names.maintenance_task_family, cpu=256, memory_limit_mib=512,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.X86_64,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
        )
        self.task_definition.add_container(
            WORKER_CONTAINER,
            image=ecs.ContainerImage.from_asset(str(WORKER_IMAGE_DIR), exclude=["**/__pycache__", "*.egg-info"]),
            cpu=256, memory_limit_mib=512, essential=True, readonly_root_filesystem=False,
            # every S3 request names the repositories' owner, this account (worker_image/rdsbackup/s3_clients.py)
            environment={REPOSITORY_OWNER_ENV: Stack.of(self).account},
            logging=ecs.LogDriver.aws_logs(stream_prefix="maintenance", log_group=self.log_group),
            command=["--help"],
        )
        acknowledge(self.task_definition, "AwsSolutions-ECS2",
                    "The environment holds the repositories' owner (an account id) only; no secret.")
        for bucket in buckets:
            # read, write, delete (forget, prune, archive retention) and Object Lock state (never deletes a
            # locked archived point)
            self.task_role.add_to_policy(iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                         "s3:GetObjectRetention", "s3:GetObjectLegalHold"],
                resources=[bucket.arn_for_objects("*")]))
            self.task_role.add_to_policy(iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[bucket.bucket_arn]))
            bucket_id = bucket.node.default_child and bucket.stack.get_logical_id(bucket.node.default_child)
            acknowledge(self.task_role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]",
                        "Repository objects are content-addressed packs, indexes and manifests under the bucket.")
        key.grant(self.task_role, "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")
        acknowledge(self.task_definition.obtain_execution_role(), "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken supports no resource-level permissions (CDK adds it to pull "
                    "the worker image).")
