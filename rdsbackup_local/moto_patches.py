"""Small, documented patches that make moto behave like AWS where our code depends on it.

``shared_snapshot_copies``: in moto 5.2.5, ``copy_db_snapshot`` / ``copy_db_cluster_snapshot`` with
the ARN of a snapshot that *another account* shared with the caller fails with ``DBSnapshotNotFound``
(``DBClusterSnapshotNotFoundFault``): ``RDSBackend.get_snapshot`` looks the ARN's region up in the
*caller's* account only. AWS resolves such an ARN in the owning account and allows the copy when the
snapshot's ``restore`` attribute lists the caller's account (or ``all``). The patch does exactly that,
and otherwise keeps moto's behaviour (an unshared snapshot of another account is still not found).

``tls_requests``: moto 5.2.5 matches a bucket policy's ``Bool aws:SecureTransport=false`` deny on
every request, so a TLS-only bucket (such as the SQL Server temporary bucket) refuses everything; AWS
applies it to plain-HTTP requests only, and every SDK call is TLS.

``faithful_restores``: moto 5.2.5 drops every falsy override of ``restore_db_instance_from_db_snapshot``
(``PubliclyAccessible=False``, ``MultiAZ=False``, ``DeletionProtection=False`` keep the source's value);
AWS applies them. And moto names the automated snapshot of every new instance or cluster
``rds:<id>-<minute>`` and fails the create when one by that name exists (a restore under the name of an
instance renamed aside a minute earlier, mode replace); AWS keeps the old one's automated backups apart.
And restoring a snapshot of a cluster whose master password RDS manages (``ManageMasterUserPassword``)
crashes moto (``KeyError: '_master_user_password'`` in ``DBCluster.get_cfg``); AWS restores it.
The patch applies explicit false values, skips an automated snapshot whose name is taken, and reads
such a cluster's settings without a password.

``child executions`` (part of :func:`install`): moto 5.2.5 runs a ``states:startExecution`` task (plain,
``.sync``, ``.sync:2``) by handing the state language's PascalCase parameters (``StateMachineArn``,
``Input``, ``Name``) to a boto3 client that takes camelCase, and fails with ``KeyError: 'StateMachineArn'``;
it then reads the answer as PascalCase (``ExecutionArn``) where boto3 returns camelCase. AWS runs the
child. The patch converts the parameter and answer casing; the restore-test workflow starts the
restore state machine this way, and the backup session each resource's execution.

``cross_account_keys`` (part of :func:`install`): moto 5.2.5 looks every KMS key up in the *caller's*
account, so a key named by the ARN of another account is ``NotFoundException``. AWS uses the key of
the account the ARN names (when its key policy allows the caller: moto enforces no key policy either).
The patch serves a request whose ``KeyId`` is another account's key ARN from that account's keys; the
worker of a production account uses the backup account's repository key this way.

``rds_account_quotas`` (part of :func:`install`): moto 5.2.5 has no ``DescribeAccountAttributes`` and
counts no manual-snapshot quota of AWS's size (its own limit, ``MOTO_RDS_SNAPSHOT_LIMIT``, defaults to
1,000 and counts automated snapshots too). AWS reports ``ManualSnapshots`` / ``ManualClusterSnapshots``
(``Used``, ``Max``; 100 each by default, adjustable per account and region) and refuses a create or copy
beyond ``Max`` with ``SnapshotQuotaExceeded``. The patch answers ``DescribeAccountAttributes`` from moto's
manual snapshots and refuses creates and copies beyond the quota, as AWS does;
:data:`MANUAL_SNAPSHOT_QUOTAS` stands in for a quota raised through Service Quotas.

``unique_resource_ids``: moto 5.2.5 gives every DB instance the same ``DbiResourceId``
(``db-M5ENSHXFPU6XHZ4G4ZEI5QIO2U``), so a database deleted and created again under its name keeps it; AWS
gives every new instance its own, which is how retention tells a recreated database's snapshots from the
old one's. The patch gives each instance created within the block a resource id of its own.

``restore_status_listing`` (part of :func:`install`): moto 5.2.5 ignores ``ListObjectsV2``'s
``x-amz-optional-object-attributes: RestoreStatus`` header; AWS then lists each object's retrieval
(``RestoreStatus``: ``IsRestoreInProgress``, ``RestoreExpiryDate``; absent when none was asked for). The
restore workflow follows a Glacier retrieval this way (s3:ListBucket only, no s3:GetObject on packs). The
patch adds ``RestoreStatus`` to the listing when the header asks for it, from moto's own retrieval state.

Use it as a context manager around a test (``with shared_snapshot_copies(): ...``), or call
:func:`install` once in a process that runs moto's server (the local demo); :func:`uninstall` undoes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.core.responses import ActionResult
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.kms.models import kms_backends
from moto.kms.responses import KmsResponse
from moto.rds import exceptions as rds_errors
from moto.rds import models as rds_models
from moto.rds.responses import RDSResponse
from moto.s3 import models as s3_models
from moto.s3.responses import S3Response
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_sfn

_original_get_snapshot = rds_models.RDSBackend.get_snapshot
_original_kms_backend = KmsResponse.kms_backend
_installed = False


def _kms_backend_of_the_key(self: Any) -> Any:
    """The keys of the account a ``KeyId`` ARN names (the caller's otherwise)."""
    parts = (self._get_param("KeyId") or "").split(":")
    if len(parts) > 5 and parts[0] == "arn" and parts[2] == "kms" and parts[4] != self.current_account:
        return kms_backends[parts[4]][parts[3]]
    return _original_kms_backend.fget(self)


def _get_snapshot(self: Any, identifier: str, resource_type: type, not_found_exception: type) -> Any:
    if identifier.startswith("arn:"):
        region, account, _kind, name = rds_models.split_arn(identifier)
        if account != self.account_id:
            owner = rds_models.rds_backends[account][region]
            snapshot = owner.resource_map[resource_type].get(name)
            shared_with = set(snapshot.attributes.get("restore", [])) if snapshot is not None else set()
            if snapshot is None or not ({self.account_id, "all"} & shared_with):
                raise not_found_exception(identifier)
            return snapshot
    return _original_get_snapshot(self, identifier, resource_type, not_found_exception)


_original_restore = rds_models.RDSBackend.restore_db_instance_from_db_snapshot
_original_auto_snapshot = rds_models.RDSBackend.create_auto_snapshot
_original_auto_cluster_snapshot = rds_models.RDSBackend.create_auto_cluster_snapshot
_original_cluster_cfg = rds_models.DBCluster.get_cfg


def _cluster_cfg(self: Any) -> dict[str, Any]:
    if "_master_user_password" not in self.__dict__:  # the password is in the RDS-managed secret
        self.__dict__["_master_user_password"] = None
    return _original_cluster_cfg(self)


def _restore_db_instance_from_db_snapshot(self: Any, from_snapshot_id: str, overrides: dict[str, Any]) -> Any:
    database = _original_restore(self, from_snapshot_id, overrides)
    for key, value in overrides.items():
        if value is False and hasattr(database, key):
            setattr(database, key, False)
    return database


def _skip_taken_name(original: Any) -> Any:
    def create(self: Any, source_identifier: str, snapshot_identifier: str) -> Any:
        try:
            return original(self, source_identifier, snapshot_identifier)
        except (rds_models.DBSnapshotAlreadyExistsError, rds_models.DBClusterSnapshotAlreadyExistsError):
            return None
    return create


_SfnTask = state_task_service_sfn.StateTaskServiceSfn
_original_sfn_task = _SfnTask._eval_service_task
_original_sync2_output = _SfnTask._sync2_api_output_of


def _recase(mapping: dict[str, Any], upper: bool) -> dict[str, Any]:
    return {(key[:1].upper() if upper else key[:1].lower()) + key[1:]: value for key, value in mapping.items()}


def _sfn_task(self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: dict,
              state_credentials: Any) -> None:
    if self._get_boto_service_action() != "start_execution":
        return _original_sfn_task(self, env, resource_runtime_part, normalised_parameters, state_credentials)
    _original_sfn_task(self, env, resource_runtime_part, _recase(normalised_parameters, upper=False),
                       state_credentials)
    env.stack.append(_recase(env.stack.pop(), upper=True))
    return None


def _sync2_output(typ: type, value: dict) -> None:
    _original_sync2_output(typ, value)
    value.update(_recase({key: value.pop(key) for key in list(value)}, upper=True))


# --- RDS account quotas ---------------------------------------------------------------------------
DEFAULT_MANUAL_SNAPSHOT_QUOTA = 100
# (account, region, "ManualSnapshots" | "ManualClusterSnapshots") -> Max, for quotas raised in a test
MANUAL_SNAPSHOT_QUOTAS: dict[tuple[str, str, str], int] = {}
_QUOTA_OF_KIND = {"instance": "ManualSnapshots", "cluster": "ManualClusterSnapshots"}
# backend method -> the kind of snapshot it adds
_SNAPSHOT_MAKERS = {"create_db_snapshot": "instance", "copy_db_snapshot": "instance",
                    "create_db_cluster_snapshot": "cluster", "copy_db_cluster_snapshot": "cluster"}
_original_makers = {name: getattr(rds_models.RDSBackend, name) for name in _SNAPSHOT_MAKERS}


def manual_snapshot_usage(backend: Any, kind: str) -> tuple[int, int]:
    """(Used, Max) of the manual-snapshot quota of ``kind`` in a moto RDS backend (one account-region)."""
    snapshots = backend.database_snapshots if kind == "instance" else backend.cluster_snapshots
    used = sum(1 for snapshot in snapshots.values() if snapshot.snapshot_type == "manual")
    key = (backend.account_id, backend.region_name, _QUOTA_OF_KIND[kind])
    return used, MANUAL_SNAPSHOT_QUOTAS.get(key, DEFAULT_MANUAL_SNAPSHOT_QUOTA)


def _describe_account_attributes(self: Any) -> ActionResult:
    quotas = []
    for kind, name in _QUOTA_OF_KIND.items():
        used, maximum = manual_snapshot_usage(self.backend, kind)
        quotas.append({"AccountQuotaName": name, "Used": used, "Max": maximum})
    return ActionResult({"AccountQuotas": quotas})


def _quota_enforcing(name: str, kind: str) -> Any:
    original = _original_makers[name]

    def make(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("snapshot_type", "manual") == "manual":
            used, maximum = manual_snapshot_usage(self, kind)
            if used >= maximum:
                raise rds_errors.SnapshotQuotaExceededFault()
        return original(self, *args, **kwargs)

    return make


def _install_quotas() -> None:
    RDSResponse.describe_account_attributes = _describe_account_attributes  # type: ignore[attr-defined]
    for name, kind in _SNAPSHOT_MAKERS.items():
        setattr(rds_models.RDSBackend, name, _quota_enforcing(name, kind))


def _uninstall_quotas() -> None:
    if hasattr(RDSResponse, "describe_account_attributes"):
        del RDSResponse.describe_account_attributes
    for name, original in _original_makers.items():
        setattr(rds_models.RDSBackend, name, original)
    MANUAL_SNAPSHOT_QUOTAS.clear()


_original_serialized = S3Response.serialized


def _serialized(self: Any, action_result: ActionResult) -> Any:
    asked = self.headers.get("x-amz-optional-object-attributes") or ""
    if self.data.get("Action") == "ListObjectsV2" and "RestoreStatus" in asked:
        bucket = self.backend.get_bucket(self.bucket_name)
        for item in action_result.result.get("Contents", []):  # type: ignore[union-attr]
            key = bucket.keys.get(item["Key"])
            if key is not None and key.expiry_date is not None:
                in_progress = key.status == "IN_PROGRESS"
                item["RestoreStatus"] = {"IsRestoreInProgress": in_progress}
                if not in_progress:
                    item["RestoreStatus"]["RestoreExpiryDate"] = key._expiry
    return _original_serialized(self, action_result)


def install() -> None:
    """Teach moto to resolve shared snapshot ARNs of other accounts, to restore as AWS does, to start
    child executions and to keep RDS's manual-snapshot quotas (idempotent)."""
    global _installed
    rds_models.RDSBackend.get_snapshot = _get_snapshot  # type: ignore[method-assign]
    _install_restores()
    _SfnTask._eval_service_task = _sfn_task  # type: ignore[method-assign]
    _SfnTask._sync2_api_output_of = staticmethod(_sync2_output)  # type: ignore[method-assign]
    _install_quotas()
    KmsResponse.kms_backend = property(_kms_backend_of_the_key)  # type: ignore[method-assign,assignment]
    S3Response.serialized = _serialized  # type: ignore[method-assign]
    _installed = True


def uninstall() -> None:
    """Restore moto's own behaviour."""
    global _installed
    rds_models.RDSBackend.get_snapshot = _original_get_snapshot  # type: ignore[method-assign]
    _uninstall_restores()
    _SfnTask._eval_service_task = _original_sfn_task  # type: ignore[method-assign]
    _SfnTask._sync2_api_output_of = staticmethod(_original_sync2_output)  # type: ignore[method-assign]
    _uninstall_quotas()
    KmsResponse.kms_backend = _original_kms_backend  # type: ignore[method-assign]
    S3Response.serialized = _original_serialized  # type: ignore[method-assign]
    _installed = False


def _install_restores() -> None:
    backend = rds_models.RDSBackend
    backend.restore_db_instance_from_db_snapshot = _restore_db_instance_from_db_snapshot  # type: ignore[method-assign]
    backend.create_auto_snapshot = _skip_taken_name(_original_auto_snapshot)  # type: ignore[method-assign]
    backend.create_auto_cluster_snapshot = _skip_taken_name(  # type: ignore[method-assign]
        _original_auto_cluster_snapshot)
    rds_models.DBCluster.get_cfg = _cluster_cfg  # type: ignore[method-assign]


def _uninstall_restores() -> None:
    backend = rds_models.RDSBackend
    backend.restore_db_instance_from_db_snapshot = _original_restore  # type: ignore[method-assign]
    backend.create_auto_snapshot = _original_auto_snapshot  # type: ignore[method-assign]
    backend.create_auto_cluster_snapshot = _original_auto_cluster_snapshot  # type: ignore[method-assign]
    rds_models.DBCluster.get_cfg = _original_cluster_cfg  # type: ignore[method-assign]


@contextmanager
def faithful_restores() -> Iterator[None]:
    """Within the block, restores apply explicit false settings and never trip over automated snapshot names."""
    _install_restores()
    try:
        yield
    finally:
        if not _installed:
            _uninstall_restores()


@contextmanager
def shared_snapshot_copies() -> Iterator[None]:
    """Within the block moto behaves as AWS where our code depends on it (:func:`install`): cross-account
    copies of shared snapshots by ARN work, RDS keeps (and reports) its manual-snapshot quotas,
    ``states:startExecution`` tasks start child executions."""
    was_installed = _installed
    install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()


@contextmanager
def unique_resource_ids() -> Iterator[None]:
    """Within the block each new DB instance gets its own ``DbiResourceId``, as in AWS."""
    import secrets
    import string

    original = rds_models.DBInstance.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.dbi_resource_id = "db-" + "".join(secrets.choice(string.ascii_uppercase + string.digits)
                                               for _ in range(26))

    rds_models.DBInstance.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        rds_models.DBInstance.__init__ = original  # type: ignore[method-assign]


@contextmanager
def tls_requests() -> Iterator[None]:
    """moto 5.2.5 matches a bucket policy's ``Bool aws:SecureTransport=false`` deny on every request (it does
    not evaluate ``Bool``), so a TLS-only bucket refuses all object calls. Every SDK call to AWS is TLS: within
    the block, such statements do not apply, as in AWS."""
    original = s3_models.FakeBucket.get_permission

    def applies_to_tls(statement: dict) -> bool:
        return statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") != "false"

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        policy = json.loads(self.policy.decode())
        statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
        kept = [st for st in statements if applies_to_tls(st)]
        if not kept:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(action, resource)

    s3_models.FakeBucket.get_permission = get_permission  # type: ignore[method-assign]
    try:
        yield
    finally:
        s3_models.FakeBucket.get_permission = original  # type: ignore[method-assign]




class _Retrievals:
    """Handle of `slow_retrievals`: `complete()` finishes every retrieval asked for so far."""

    def complete(self) -> None:
        from moto.moto_api import state_manager

        state_manager.set_transition("s3::keyrestore", {"progression": "immediate"})


@contextmanager
def slow_retrievals() -> Iterator[_Retrievals]:
    """moto 5.2.5 completes an S3 RestoreObject (a Glacier retrieval) at once; AWS takes minutes to 12
    hours (48 for Deep Archive's Bulk tier). Within the block a retrieval stays in progress
    (``x-amz-restore: ongoing-request="true"``, GET refused with ``InvalidObjectState``) until the
    handle's ``complete()`` is called, so "not ready yet" paths can be tested."""
    from moto.moto_api import state_manager

    original = s3_models.FakeKey.restore

    def restore(self: Any, days: int) -> None:
        original(self, days)
        self.status = "IN_PROGRESS"

    # "manual" progression advances only when asked to: the status stays IN_PROGRESS.
    state_manager.set_transition("s3::keyrestore", {"progression": "manual", "times": 1 << 62})
    s3_models.FakeKey.restore = restore  # type: ignore[method-assign]
    try:
        yield _Retrievals()
    finally:
        s3_models.FakeKey.restore = original  # type: ignore[method-assign]
        state_manager.unset_transition("s3::keyrestore")


# the descriptive name: every patch of install(), not only shared snapshot copies
aws_behaviour = shared_snapshot_copies
