"""Backup repositories: one S3 bucket per configured repository, and the KMS key their data and master
keys are protected with. Workers in production accounts reach them by name (see infra.topology).

Isolation (docs/security.md): each production place's worker role, named exactly, reaches only the
prefixes (`<policy>/`) of the policies that back up its databases and its result documents
(`rdsbackup-results/<account>/`); it may create objects but never delete (its lock objects excepted)
nor overwrite one (conditional writes, `s3:if-none-match`), and the bucket keeps every version. Nobody
but the break-glass role (and the CloudFormation deployment role) may change the bucket's policy,
lifecycle, versioning or object-lock settings, or bypass retention.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import Repository
from infra.nag import acknowledge
from infra.topology import RESULT_PREFIX, Place, names_of, repository_prefix

# Without Object Lock, how long an overwritten or deleted object's previous version is kept.
NONCURRENT_VERSION_DAYS = 30
# Bucket settings that only the break-glass role may change (they are how data would be destroyed).
PROTECTED_BUCKET_ACTIONS = [
    "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration", "s3:DeleteBucket",
]
PROTECTED_OBJECT_ACTIONS = ["s3:BypassGovernanceRetention", "s3:PutObjectRetention", "s3:PutObjectLegalHold",
                            "s3:DeleteObjectVersion"]
PROTECTED_KEY_ACTIONS = ["kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy"]
WORKER_KEY_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]


@dataclass(frozen=True)
class RepositoryWriter:
    """A production place whose worker writes a policy's restore points into a repository."""

    repository: str
    place: Place
    policy: str
    # a snapshot-only policy's restore-test worker: result documents only, no restore points
    results_only: bool = False
    # an archive repository: the worker restores from it (reads, and its shared lock) and never writes it
    read_only: bool = False

    @property
    def prefix(self) -> str:
        return repository_prefix(self.policy)


def deployment_role_arn(control: Place) -> str:
    """CloudFormation's execution role of the default CDK bootstrap: it must still update the policies."""
    return (f"arn:aws:iam::{control.account}:role/cdk-hnb659fds-cfn-exec-role-{control.account}-"
            f"{control.region}")


def _lock_retention(mode: str | None, days: int | None) -> s3.ObjectLockRetention | None:
    """The bucket's default Object Lock retention (config: object_lock_mode, object_lock_days)."""
    if not days:
        return None
    if mode == "COMPLIANCE":
        return s3.ObjectLockRetention.compliance(Duration.days(days))
    return s3.ObjectLockRetention.governance(Duration.days(days))


class Repositories(Construct):
    """Buckets (KMS-encrypted, TLS-only, versioned, access-logged, public access blocked) and their key."""

    def __init__(self, scope: Construct, id_: str, *, repositories: dict[str, Repository], control: Place,
                 writers: list[RepositoryWriter], break_glass_role_arn: str | None = None,
                 lock_modes: dict[str, str | None] | None = None):
        super().__init__(scope, id_)
        self.names = names_of(self)
        self.exempt = [deployment_role_arn(control), *([break_glass_role_arn] if break_glass_role_arn else [])]
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="rds-backup: repository objects and the repositories' master keys")
        self.key.add_alias(self.names.key_alias("repository"))
        self.key.add_to_resource_policy(iam.PolicyStatement(
            effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()], actions=PROTECTED_KEY_ACTIONS, resources=["*"],
            conditions={"ArnNotEquals": {"aws:PrincipalArn": self.exempt}}))
        self.access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the access-log bucket of the repositories; logging it into itself would loop.")
        self.buckets: dict[str, s3.Bucket] = {}
        lock_modes = lock_modes or {}
        for name, settings in repositories.items():
            locked = settings.object_lock_days is not None
            bucket = s3.Bucket(
                self, f"Repository-{name}",
                bucket_name=self.names.repository_bucket(name, control),
                encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
                enforce_ssl=True, versioned=True, object_lock_enabled=locked,
                object_lock_default_retention=_lock_retention(lock_modes.get(name), settings.object_lock_days),
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
                server_access_logs_bucket=self.access_logs, server_access_logs_prefix=f"{name}/",
                lifecycle_rules=[
                    s3.LifecycleRule(prefix=RESULT_PREFIX, expiration=Duration.days(30)),
                    s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(2)),
                    # a previous version outlives the lock that protected it, then goes
                    s3.LifecycleRule(noncurrent_version_expiration=Duration.days(
                        settings.object_lock_days or NONCURRENT_VERSION_DAYS)),
                ],
            )
            self._protect(bucket)
            here = sorted({w for w in writers if w.repository == name}, key=lambda w: (w.place, w.policy))
            own = [w for w in here if not w.read_only]
            for writer in own:
                self._allow_writer(bucket, writer)
            if own:
                self._append_only(bucket, own)
            for reader in (w for w in here if w.read_only):
                self._allow_reader(bucket, reader)
            self.buckets[name] = bucket
        self._allow_worker_keys(sorted({w.place for w in writers}))

    def _protect(self, bucket: s3.Bucket) -> None:
        """Deny everyone but the exempt roles the changes that would destroy restore points."""
        anyone_else = {"ArnNotEquals": {"aws:PrincipalArn": self.exempt}}
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="ProtectSettings", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=PROTECTED_BUCKET_ACTIONS, resources=[bucket.bucket_arn], conditions=anyone_else))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="ProtectVersions", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=PROTECTED_OBJECT_ACTIONS, resources=[bucket.arn_for_objects("*")], conditions=anyone_else))
        # Objects are encrypted with the repository key only: a put without encryption headers gets the
        # bucket's default (this key); one naming another key or another kind of encryption is refused.
        # (Not `StringNotEqualsIfExists`: IAM evaluates an IfExists condition on a missing key as true, so
        # that Deny would refuse every put that relies on the default.)
        for sid, header, value in (("RepositoryKeyOnly", "s3:x-amz-server-side-encryption-aws-kms-key-id",
                                    self.key.key_arn),
                                   ("KmsEncryptionOnly", "s3:x-amz-server-side-encryption", "aws:kms")):
            bucket.add_to_resource_policy(iam.PolicyStatement(
                sid=sid, effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()], actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects("*")],
                conditions={"Null": {header: "false"}, "StringNotEquals": {header: value}}))

    def _worker(self, grant: RepositoryWriter) -> tuple[iam.IPrincipal, dict, str]:
        """The principal, the condition naming its worker role exactly, and the statement ids' suffix of a
        worker's grant. Principals by account with the role named in a condition: a bucket policy naming a
        role that does not exist yet (the access stacks deploy independently) would be refused."""
        place = grant.place
        exactly = {"ArnEquals": {"aws:PrincipalArn": self.names.worker_role_arn(place)}}
        sid = f"{grant.policy}{place.account}{place.region}".replace("-", "")
        return iam.AccountPrincipal(place.account), exactly, sid

    def _allow_writer(self, bucket: s3.Bucket, writer: RepositoryWriter) -> None:
        """The writer's own prefix: read and add objects; delete only its lock objects."""
        principal, exactly, sid = self._worker(writer)
        if writer.results_only:
            bucket.add_to_resource_policy(iam.PolicyStatement(
                sid=f"Results{sid}", principals=[principal], conditions=exactly,
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects(f"{RESULT_PREFIX}{writer.place.account}/*")]))
            return
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"Write{sid}", principals=[principal], conditions=exactly,
            actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{writer.prefix}/*"),
                       bucket.arn_for_objects(f"{RESULT_PREFIX}{writer.place.account}/*")]))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"Locks{sid}", principals=[principal], conditions=exactly, actions=["s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{writer.prefix}/locks/*")]))
        self._allow_listing(bucket, writer)

    def _allow_listing(self, bucket: s3.Bucket, grant: RepositoryWriter) -> None:
        """A worker lists only its policy's prefix, and finds the bucket's region."""
        principal, exactly, sid = self._worker(grant)
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"List{sid}", principals=[principal], actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={**exactly, "StringLike": {"s3:prefix": [grant.prefix, f"{grant.prefix}/*"]}}))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"Location{sid}", principals=[principal], conditions=exactly, actions=["s3:GetBucketLocation"],
            resources=[bucket.bucket_arn]))

    def _append_only(self, bucket: s3.Bucket, writers: list[RepositoryWriter]) -> None:
        """Production workers create objects but never overwrite one: a put (PutObject or
        CompleteMultipartUpload: `s3:ObjectCreationOperation`) must carry `If-None-Match: *`, which S3
        refuses when the name exists. CreateMultipartUpload and UploadPart take no conditional header and
        create nothing visible. Exempt: the lock objects (a holder rewrites its own every few minutes;
        they hold no data, and the worker may delete them anyway) and the result documents (a retried job
        rewrites its own; they are reports of the worker's account, not restore points)."""
        workers = sorted({self.names.worker_role_arn(w.place) for w in writers})
        mutable = sorted({bucket.arn_for_objects(f"{w.prefix}/locks/*") for w in writers if not w.results_only}
                         | {bucket.arn_for_objects(f"{RESULT_PREFIX}*")})
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="WorkersNeverOverwrite", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"], not_resources=mutable,
            conditions={"ArnEquals": {"aws:PrincipalArn": workers},
                        "Null": {"s3:if-none-match": "true"},  # S3 accepts only `*` on writes
                        "Bool": {"s3:ObjectCreationOperation": "true"}}))

    def _allow_reader(self, bucket: s3.Bucket, reader: RepositoryWriter) -> None:
        """An archive's policy prefix for a production worker restoring from it: read, list, and its
        shared lock objects (a restore holds one so that archive retention never deletes what it reads)."""
        principal, exactly, sid = self._worker(reader)
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"Read{sid}", principals=[principal], conditions=exactly, actions=["s3:GetObject"],
            resources=[bucket.arn_for_objects(f"{reader.prefix}/*")]))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=f"Locks{sid}", principals=[principal], conditions=exactly,
            actions=["s3:PutObject", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{reader.prefix}/locks/*")]))
        self._allow_listing(bucket, reader)

    def _allow_worker_keys(self, places: list[Place]) -> None:
        """Workers use the key through S3 for these buckets, or directly to wrap a repository's master key."""
        region = Stack.of(self).region
        for account in sorted({place.account for place in places}):
            roles = sorted(self.names.worker_role_arn(place) for place in places if place.account == account)
            exactly = {"ArnEquals": {"aws:PrincipalArn": roles}}
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)], actions=WORKER_KEY_ACTIONS, resources=["*"],
                conditions={**exactly, "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}))
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.AccountPrincipal(account)], actions=WORKER_KEY_ACTIONS, resources=["*"],
                conditions={**exactly, "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": [
                    "rdsbackup-repository"]}}))
