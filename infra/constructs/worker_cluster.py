"""The temporary worker's home in a production account and region: an ECS cluster, the task
definition that runs the `rdsbackup` image, and the task's least-privilege role."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import acknowledge
from infra.topology import REPOSITORY_OWNER_ENV, RESULT_PREFIX, TEMP_BUCKET_OWNER_ENV, WORKER_CONTAINER, names_of

WORKER_IMAGE_DIR = Path(__file__).resolve().parents[2] / "worker_image"
TEMP_BUCKET_PREFIX = "rdsbackup-tmp"
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/scratch"
# The ECS-optimized Amazon Linux 2023 image, resolved by CloudFormation at deploy (no lookup at synth).
ECS_AMI = "{{resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id}}"


class WorkerCluster(Construct):
    """Cluster + task definition (Fargate and EC2 compatible) + task role.

    The image is built from `worker_image/` by `cdk deploy` (Docker at deploy only; synth just stages
    the folder). Sizes are set per run through task overrides; the defaults here are the smallest.
    """

    def __init__(self, scope: Construct, id_: str, *, repository_buckets: list[str], control_account: str,
                 control_region: str, secret_arns: list[str], capacity_providers: list[str],
                 repository_prefixes: list[tuple[str, str]] | None = None, secret_sources: list[str] | None = None,
                 archive_prefixes: list[tuple[str, str]] | None = None):
        super().__init__(scope, id_)
        self.secret_sources = secret_sources
        stack, names = Stack.of(self), names_of(self)
        # L1: the L2 Cluster would make a VPC of its own; workers run in the databases' VPCs.
        self.cluster = ecs.CfnCluster(
            self, "Cluster", cluster_name=names.worker_cluster,
            cluster_settings=[ecs.CfnCluster.ClusterSettingsProperty(name="containerInsights", value="enabled")],
            capacity_providers=["FARGATE", *capacity_providers],
        )
        self.task_role = iam.Role(self, "TaskRole", role_name=names.worker_role(stack.region),
                                  assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                  description="rds-backup worker: read DB credentials, write the repository")
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.task_definition = ecs.TaskDefinition(
            self, "TaskDefinition", family=names.worker_task_family,
            compatibility=ecs.Compatibility.EC2_AND_FARGATE, network_mode=ecs.NetworkMode.AWS_VPC,
            cpu="256", memory_mib="512", task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.X86_64,
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
        )
        # A read-only root filesystem: the worker writes only its scratch files (dump scripts, spill
        # files, psql's home) to a task volume, which goes with the task.
        self.task_definition.add_volume(name=SCRATCH_VOLUME)
        container = self.task_definition.add_container(
            WORKER_CONTAINER,
            image=ecs.ContainerImage.from_asset(str(WORKER_IMAGE_DIR), exclude=["**/__pycache__", "*.egg-info"]),
            # moto's ECS (and the EC2 launch type) need container-level sizes; runs override the task's.
            cpu=256, memory_limit_mib=512, essential=True, readonly_root_filesystem=True,
            # every S3 request names the bucket's owner (worker_image/rdsbackup/s3_clients.py)
            environment={"TMPDIR": SCRATCH_PATH, "HOME": SCRATCH_PATH, REPOSITORY_OWNER_ENV: control_account,
                         TEMP_BUCKET_OWNER_ENV: Stack.of(self).account},
            logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            command=["--help"],
        )
        acknowledge(self.task_definition, "AwsSolutions-ECS2",
                    "TMPDIR and HOME name the scratch volume, the bucket owners are account ids; no secret is in "
                    "the environment (the job spec "
                    "comes per run, the database password from Secrets Manager).")
        container.add_mount_points(ecs.MountPoint(container_path=SCRATCH_PATH, source_volume=SCRATCH_VOLUME,
                                                  read_only=False))
        self._grant(repository_buckets, control_account, control_region, secret_arns, repository_prefixes or [])
        self.instance_template = self._instance_template(names.worker_cluster) if capacity_providers else None
        self._grant_archives(archive_prefixes or [])
        acknowledge(self.task_definition.obtain_execution_role(), "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken supports no resource-level permissions (CDK adds it to pull "
                    "the worker image).")

    def _instance_template(self, cluster: str) -> ec2.CfnLaunchTemplate:
        """EC2 launch type: the launch template for the capacity provider's Auto Scaling group. A task
        must not reach the instance metadata service (it would get the instance role's credentials):
        the ECS agent blocks it for awsvpc tasks (ECS_AWSVPC_BLOCK_IMDS), and IMDSv2 with a hop limit
        of 1 keeps any other container off it."""
        role = iam.Role(self, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                        description="rds-backup worker instances: the ECS agent",
                        managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                            "service-role/AmazonEC2ContainerServiceforEC2Role")])
        acknowledge(role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                          "AmazonEC2ContainerServiceforEC2Role]",
                    "AWS's policy for the ECS agent on container instances; tasks cannot use it (IMDS blocked).")
        profile = iam.CfnInstanceProfile(self, "InstanceProfile", roles=[role.role_name])
        user_data = "\n".join(["#!/bin/bash", "cat >> /etc/ecs/ecs.config <<'EOF'", f"ECS_CLUSTER={cluster}",
                               "ECS_AWSVPC_BLOCK_IMDS=true", "EOF", ""])
        template = ec2.CfnLaunchTemplate(
            self, "InstanceTemplate", launch_template_name=f"{cluster}-instances",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                image_id=ECS_AMI,
                iam_instance_profile=ec2.CfnLaunchTemplate.IamInstanceProfileProperty(arn=profile.attr_arn),
                metadata_options=ec2.CfnLaunchTemplate.MetadataOptionsProperty(
                    http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
                user_data=Fn.base64(user_data)))
        CfnOutput(Stack.of(self), "WorkerInstanceTemplate", value=template.ref,
                  description="Launch template for the EC2 capacity provider's Auto Scaling group (IMDS blocked "
                              "for tasks)")
        return template

    def _grant_archives(self, prefixes: list[tuple[str, str]]) -> None:
        """Restores from the policies' archives: read their prefixes, hold a shared lock there, never write."""
        role = self.task_role
        if not prefixes:
            return
        reads = [f"arn:aws:s3:::{bucket}/{prefix}/*" for bucket, prefix in prefixes]
        locks = [f"arn:aws:s3:::{bucket}/{prefix}/locks/*" for bucket, prefix in prefixes]
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=reads))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject", "s3:DeleteObject"], resources=locks))
        for bucket, prefix in prefixes:
            role.add_to_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[f"arn:aws:s3:::{bucket}"],
                conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetBucketLocation"],
                                               resources=sorted({f"arn:aws:s3:::{b}" for b, _ in prefixes})))
        for arn in [*reads, *locks]:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn}]",
                        "An archive's objects are content-addressed packs, indexes and manifests under the policy's "
                        "prefix; the worker restores from them and writes only its lock objects.")

    def _grant(self, repository_buckets, control_account, control_region, secret_arns, prefixes) -> None:
        stack = Stack.of(self)
        role = self.task_role
        bucket_arns = [f"arn:aws:s3:::{bucket}" for bucket in repository_buckets]
        # Append-only in its own prefixes: no delete but of its lock objects (forget and prune run in
        # the backup account); result documents under this account's results prefix.
        own = [f"arn:aws:s3:::{bucket}/{prefix}/*" for bucket, prefix in prefixes]
        results = [f"{arn}/{RESULT_PREFIX}{stack.account}/*" for arn in bucket_arns]
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                                               resources=[*own, *results]))
        if prefixes:  # (a snapshot-only policy's test worker has no repository prefix: results only)
            role.add_to_policy(iam.PolicyStatement(
                actions=["s3:DeleteObject"], resources=[f"arn:aws:s3:::{bucket}/{prefix}/locks/*"
                                                        for bucket, prefix in prefixes]))
        for bucket, prefix in prefixes:
            role.add_to_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[f"arn:aws:s3:::{bucket}"],
                conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetBucketLocation"], resources=bucket_arns))
        role.add_to_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
            resources=[f"arn:aws:kms:{control_region}:{control_account}:key/*"],
            conditions={"ForAnyValue:StringEquals": {"kms:ResourceAliases": names_of(self).key_alias("repository")}}))
        rds_secrets = f"arn:aws:secretsmanager:{stack.region}:{stack.account}:secret:rds!*"
        if self.secret_sources is None:
            # tag selection: any RDS-managed secret of this account and region (docs/security.md)
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"],
                                                   resources=[rds_secrets]))
        else:
            # only the secrets RDS made for the databases the policies name (RDS tags each with its DB)
            for tag, kind in (("aws:rds:primaryDBInstanceArn", ":db:"), ("aws:rds:primaryDBClusterArn", ":cluster:")):
                sources = [arn for arn in self.secret_sources if kind in arn]
                if sources:
                    role.add_to_policy(iam.PolicyStatement(
                        actions=["secretsmanager:GetSecretValue"], resources=[rds_secrets],
                        conditions={"StringEquals": {f"secretsmanager:ResourceTag/{tag}": sources}}))
        if secret_arns:
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=secret_arns))
        role.add_to_policy(iam.PolicyStatement(
            actions=["kms:Decrypt"], resources=[f"arn:aws:kms:{stack.region}:{stack.account}:key/*"],
            conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com"}}))
        # the name ends in a suffix others cannot predict (lambdas/rdsbackup_lambdas/image/names.py)
        temp_bucket = f"arn:aws:s3:::{TEMP_BUCKET_PREFIX}-{stack.account}-{stack.region}-*"
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:DeleteObject"],
                                               resources=[f"{temp_bucket}/*"]))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[temp_bucket]))
        reasons = {
            "s3": "Repository objects are content-addressed packs, indexes and manifests under the named "
                  "repository buckets; the SQL Server temporary bucket's objects are per session.",
            "kms": "Keys are chosen at run time: the repository key by its alias (kms:ResourceAliases), "
                   "secrets' keys through Secrets Manager only (kms:ViaService).",
            "secret": "RDS-managed master secrets are named rds!... by RDS; only those are readable.",
        }
        for arn in [*own, *results, *(f"arn:aws:s3:::{b}/{p}/locks/*" for b, p in prefixes), f"{temp_bucket}/*",
                    temp_bucket]:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn}]", reasons["s3"])
        for arn in (f"arn:aws:kms:{control_region}:{control_account}:key/*",
                    "arn:aws:kms:<AWS::Region>:<AWS::AccountId>:key/*",
                    f"arn:aws:kms:{stack.region}:{stack.account}:key/*"):
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn}]", reasons["kms"])
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{rds_secrets}]", reasons["secret"])
        acknowledge(role, "AwsSolutions-IAM5[Resource::arn:aws:secretsmanager:<AWS::Region>:<AWS::AccountId>:"
                          "secret:rds!*]", reasons["secret"])
