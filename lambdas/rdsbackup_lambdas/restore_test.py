"""Restore tests: which sources a run tests, the throwaway each is restored into, and what is left after.

A run of a policy's restore test (the restore-test state machine) plans one TEST per chosen source.
A TEST is an ITEM (docs/state-machine-contract.md) whose ``resource`` is the **throwaway** instance or
cluster, so the image-level worker steps (start, check, clean up) serve it unchanged, plus
``source`` (the database whose backups are tested) and ``restore_test`` (what is restored and checked).

- **Which sources.** Every selected source, or with ``sample: N`` the N tested least recently (the time
  of each source's last test is kept in DynamoDB, ``lasttest#<policy>#<arn>``), so every source is tested
  within ``ceil(sources / N)`` runs.
- **What.** The newest snapshot (or replica) and restore point of the source's newest successful
  backup (:mod:`backup_freshness`); the restore state machine verifies the snapshot's metadata.
  With ``archived_restore_point`` a second TEST per source: the newest point in the policy's archive
  repository (its manifests), whose ``retrieval`` the workflow runs before the throwaway is made.
- **The throwaway** ``<prefix>-test-<hash>`` (the deployment's name prefix: ``THROWAWAY_PREFIX``) is
  restored with the smallest sensible class, not Multi-AZ, never publicly accessible, in a temporary
  security group that admits only the test worker on the DB port (made here before the restore, in the
  source's VPC), tagged ``rdsbackup:temporary`` and ``rdsbackup:restore-test``; it is deleted on every
  path (no final snapshot) and whatever cannot be deleted is tagged ``rdsbackup:sweep=true`` for the
  orphan sweeper and reported.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions, backup_freshness, selection
from rdsbackup_lambdas.clock import now_iso
from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.errors import (
    CleanupIncomplete,
    NoResourcesSelected,
    ResourceNotInPolicy,
    SecurityGroupError,
    UnknownPolicy,
)
from rdsbackup_lambdas.image import database, names, security_groups, worker
from rdsbackup_lambdas.image.worker import group_names
from rdsbackup_lambdas.models import ImageBackup, ImageState, Item, Policy, PollState, Resource, WaitSettings
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.polling import next_poll
from rdsbackup_lambdas.restore.archive_retrieval import newest_archived_points, retrieval_for

ARCHIVED = "archived_restore_point"
RESTORE_TEST_TAG = names.RESTORE_TEST_TAG
_BATCH = 100
# the smallest class each engine runs on that still restores a real database in reasonable time
_SMALLEST_CLASS = (("aurora", "db.t4g.medium"), ("sqlserver", "db.t3.small"), ("oracle", "db.t3.small"),
                   ("", "db.t4g.micro"))


def smallest_class(engine: str) -> str:
    return next(cls for prefix, cls in _SMALLEST_CLASS if engine.startswith(prefix))


def throwaway_id(prefix: str, session_id: str, source_arn: str) -> str:
    """``<prefix><16 hex>`` (``prefix``: the deployment's ``<name prefix>-test-``, config.THROWAWAY_PREFIX):
    derived from the run and the source, so a retried step finds it."""
    return prefix + hashlib.sha256(f"{session_id}\x00{source_arn}".encode()).hexdigest()[:16]


def _throwaway(source: Resource, session_id: str, prefix: str, *, archived: bool = False) -> Resource:
    # a source's archived point is tested in a throwaway of its own (a second TEST of the run)
    ident = throwaway_id(prefix, session_id, source.arn + ("#archived" if archived else ""))
    word = "cluster" if source.kind == "cluster" else "db"
    return Resource(arn=f"arn:aws:rds:{source.region}:{source.account}:{word}:{ident}", id=ident, kind=source.kind,
                    account=source.account, region=source.region, engine=source.engine)


# --- when each source was last tested ----------------------------------------------------------------------


def _tested_key(policy: str, arn: str) -> dict[str, Any]:
    return {"pk": {"S": f"lasttest#{policy}#{arn}"}}


def last_tested(table: str, policy: str, arns: list[str]) -> dict[str, float]:
    ddb = aws_sessions.client("dynamodb", None)
    keys = [_tested_key(policy, arn) for arn in dict.fromkeys(arns)]
    found: dict[str, float] = {}
    for start in range(0, len(keys), _BATCH):
        request: dict[str, Any] = {table: {"Keys": keys[start:start + _BATCH]}}
        while request:
            answer = ddb.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                found[item["arn"]["S"]] = float(item["tested_at"]["N"])
            request = answer.get("UnprocessedKeys") or {}
    return found


def record_tested(table: str, policy: str, arn: str, passed: bool, now: float) -> None:
    aws_sessions.client("dynamodb", None).put_item(TableName=table, Item={
        **_tested_key(policy, arn), "arn": {"S": arn}, "policy": {"S": policy},
        "tested_at": {"N": str(round(now, 3))}, "passed": {"BOOL": passed}})


# --- plan ----------------------------------------------------------------------------------------------------


def plan(policy_name: str, policies: dict[str, Any], table: str, *, execution_name: str | None,
         started_at: str | None, throwaway_prefix: str, resources: list[str] | None = None) -> dict[str, Any]:
    """The run: ``{"session": {session_id, policy, started_at}, "tests": [TEST, ...], "retrievals": <how many
    TESTs have an archived point to retrieve>}``; each throwaway is named ``<throwaway_prefix><16 hex>``."""
    if policy_name not in policies:
        raise UnknownPolicy(f"unknown policy {policy_name!r} (configured: {', '.join(sorted(policies)) or 'none'})")
    raw = policies[policy_name]
    settings = raw.get("restore_test")
    if not settings:
        raise UnknownPolicy(f"policy {policy_name!r} has no restore_test")
    policy = Policy.model_validate(raw)
    # the test worker: image_backup's, or a snapshot-only policy's own (restore_test.worker)
    worker_section = raw.get("image_backup") or settings.get("worker")
    if not worker_section:
        raise UnknownPolicy(f"policy {policy_name!r}: restore tests need a test worker (image_backup or "
                            "restore_test.worker)")
    session_id = "test-" + selection.session_id_for(policy_name, execution_name, started_at)
    selected = selection.select_resources(policy_name, policy, session_id)
    if resources is not None:
        wanted = [s for s in selected if any(r in (s[0].arn, s[0].id) for r in resources)]
        if len(wanted) < len(resources):
            raise ResourceNotInPolicy(f"restore test of policy {policy_name!r}: {resources} are not all selected by it")
        selected = wanted
    if not selected:
        raise NoResourcesSelected(f"policy {policy_name!r} selects no database to test")
    arns = [resource.arn for resource, _ in selected]
    tested = last_tested(table, policy_name, arns)
    # least recently tested first (never tested = 0); the ARN breaks ties so a run's choice is stable
    ordered = sorted(selected, key=lambda s: (tested.get(s[0].arn, 0.0), s[0].arn))
    chosen = ordered[:settings["sample"]] if settings.get("sample") else ordered
    newest = backup_freshness.last_successes(table, policy_name, [r.arn for r, _ in chosen])
    # without restore points of its own, a snapshot's databases and row counts are compared with the
    # newest restore point another policy made of the same source, when there is one
    compared = {} if policy.image_backup is not None else newest_restore_points(
        table, policies, [r.arn for r, _ in chosen])
    targets = settings.get("targets") or ["snapshot"]
    archive = (raw.get("maintenance") or {}).get("archive") if ARCHIVED in targets else None
    archived = newest_archived_points(archive["repository"]) if archive else {}
    timeout_seconds = settings.get("timeout_seconds", 10800)
    # every archived point's retrieval is asked for before the first test, then the tests run one after
    # another: the retrieved copies stay readable until the last of them can have read its point
    per_source = (1 if set(targets) - {ARCHIVED} else 0) + (1 if archive is not None else 0)
    keep_days = max(1, math.ceil(len(chosen) * per_source * timeout_seconds / 86400))
    tests, archived_tests = [], []
    for resource, target in chosen:
        last = newest.get(resource.arn) or {}
        snapshot_arn = last.get("replica_arn") if "replica" in targets and "snapshot" not in targets \
            else last.get("snapshot_arn")
        rp_id = last.get("restore_point_id") if "restore_point" in targets else None
        compare_id = rp_id or (compared.get(resource.arn) or {}).get("restore_point_id")
        warnings: list[str] = []
        error = None
        if not snapshot_arn:
            error = {"Error": "NothingToTest", "Cause": f"{resource.arn} has no successful backup with a "
                     f"{'replica' if 'replica' in targets and 'snapshot' not in targets else 'snapshot'} yet"}
        image_backup = ImageBackup.model_validate(worker_section)
        compare = compared.get(resource.arn)
        if compare is not None:
            image_backup = image_backup.model_copy(update={"repository_url": compare["repository_url"]})
        test = Item(
            session_id=session_id, policy=policy_name, resource=_throwaway(resource, session_id, throwaway_prefix),
            access_role_arn=target.access_role_arn, lease_seconds=policy.lease_seconds, wait=policy.wait,
            image_backup=image_backup,
        ).model_dump(exclude={"lease", "snapshot", "snapshot_wait", "replica", "image", "replication"})
        test.update(
            source=resource.model_dump(), image=None, error=error, retrieval=None,
            restore_test={
                "source_id": resource.id, "snapshot_arn": snapshot_arn, "restore_point_id": rp_id,
                "compare_restore_point_id": compare_id, "warnings": warnings,
                "check_snapshot": "snapshot" in targets
                or "replica" in targets, "instance_class": settings.get("instance_class")
                or smallest_class(resource.engine), "timeout_seconds": timeout_seconds,
            })
        if set(targets) - {ARCHIVED}:
            tests.append(test)
        if archive is not None:
            archived_tests.append(_archived_test(
                test, resource, session_id, archive, archived.get(resource.id),
                tier=settings.get("retrieval_tier") or "Bulk", days=keep_days, policy=policy,
                throwaway_prefix=throwaway_prefix))
    # the archived points last: the workflow asks for their retrievals first and runs the other tests while
    # Glacier works
    tests += archived_tests
    logger.info("restore test planned", extra={"tests": [t["source"]["arn"] for t in tests]})
    return {"session": {"session_id": session_id, "policy": policy_name,
                        "started_at": started_at or now_iso()}, "tests": tests,
            "retrievals": sum(1 for test in tests if test["retrieval"])}


def _archived_test(test: dict[str, Any], source: Resource, session_id: str, archive: dict[str, Any],
                   point: dict[str, Any] | None, *, tier: str, days: int, policy: Policy, throwaway_prefix: str
                   ) -> dict[str, Any]:
    """The TEST of the source's newest archived point, beside `test` (the source's other TEST, whose
    snapshot restores the throwaway server): its packs are retrieved (``retrieval``) before the throwaway
    is made, then the worker restores the point from the archive repository: PostgreSQL's tables compared
    with the recorded counts and digests, SQL Server's ``.bak`` staged in the leased temporary bucket,
    restored natively and checked (ONLINE, ``DBCC CHECKDB``), as for a point in the backup repository."""
    plan_ = test["restore_test"]
    error = test["error"]
    if error is None and point is None:
        error = {"Error": "NothingToTest", "Cause": f"{source.arn} has no restore point in archive repository "
                 f"{archive['name']!r} yet"}
    rp_id = point["id"] if point else None
    image_backup = {**test["image_backup"], "repository_url": archive["repository"]}
    return {
        **test, "resource": _throwaway(source, session_id, throwaway_prefix, archived=True).model_dump(),
        "image_backup": image_backup, "error": error,
        "restore_test": {**plan_, "restore_point_id": rp_id, "compare_restore_point_id": rp_id, "warnings": [],
                         "check_snapshot": False, "archived": True,
                         "restore_point_time": point["time"] if point else None},
        "retrieval": retrieval_for(archive, rp_id, tier=tier, days=days, wait=policy.wait)
        if rp_id and error is None else None,
    }


def newest_restore_points(table: str, policies: dict[str, Any], arns: list[str]) -> dict[str, dict[str, Any]]:
    """Per source, the newest restore point any policy with image_backup made of it:
    ``{arn: {"restore_point_id", "repository_url", "policy"}}`` (sources without one are absent)."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in sorted(policies.items()):
        image = raw.get("image_backup")
        if not image:
            continue
        for arn, last in backup_freshness.last_successes(table, name, arns).items():
            if last.get("restore_point_id") and last["succeeded_at"] > found.get(arn, {}).get("succeeded_at", -1):
                found[arn] = {"restore_point_id": last["restore_point_id"], "repository_url": image["repository_url"],
                              "policy": name, "succeeded_at": last["succeeded_at"]}
    return found


# --- the throwaway ---------------------------------------------------------------------------------------------


def _client(test: dict[str, Any], service: str) -> Any:
    source = test["source"]
    return aws_sessions.client(service, source["region"], test.get("access_role_arn"), test["session_id"])


def throwaway_tags(test: dict[str, Any]) -> dict[str, str]:
    return {**names.temporary_tags(test["session_id"], test["resource"]["arn"]),
            RESTORE_TEST_TAG: test["source"]["arn"]}


def prepare(test: dict[str, Any], config: ImageConfig) -> dict[str, Any]:
    """The worker's network before the restore: two groups in the source's VPC (the throwaway's admits only
    the worker's on the DB port); for a SQL Server restore point, the temporary bucket's lease and the grant
    of this test's prefix to the option group's role (RDS restores a ``.bak`` only from S3; the throwaway is
    restored with the option group the snapshot recorded, the source's). Through the launch role, as the
    backup's ``prepare_worker``. Returns ``{"image": ImageState, "restore_input": <restore state machine
    input>, "started_at"}``."""
    item = Item.model_validate(test)
    source = Resource.model_validate(test["source"])
    where = f"account {source.account} region {source.region}"
    settings = item.image_backup
    assert settings is not None
    plan_ = test["restore_test"]
    rds = worker.client(item, "rds")  # the throwaway's place is the source's
    src = database.describe(rds, source.kind, source.id, where)
    secret_arn = database.credentials_secret(src, settings.secret_arn, where)
    engine = database.engine_family(src.engine)
    option_role = None
    if engine == "sqlserver" and plan_.get("restore_point_id"):
        option_role = worker.sqlserver_option_role(rds, src, f"SQL Server DB {source.kind} {source.id!r} in {where}")
    db_name, worker_name = group_names(item)
    pair = security_groups.ensure_pair(
        worker.client(item, "ec2"), vpc_id=src.vpc_id, port=src.port, db_name=db_name, worker_name=worker_name,
        tags=names.temporary_tags(item.session_id, item.resource.arn), what=f"the restore test of {source.id}")
    bucket = prefix = None
    if option_role is not None:
        bucket, prefix = worker.lease_temp_bucket(item, config, option_role,
                                                  before_worker_seconds=int(plan_.get("timeout_seconds") or 0))
    image = ImageState(phase="prepared", db_security_group=pair["db_security_group"],
                       worker_security_group=pair["worker_security_group"], vpc_id=src.vpc_id,
                       subnets=list(settings.worker.subnets) or src.subnets, port=src.port,
                       engine=engine, secret_arn=secret_arn, temp_bucket=bucket, temp_prefix=prefix)
    restore_input = {
        "restore": "snapshot", "snapshot_arn": plan_["snapshot_arn"], "mode": "new", "keep_on_failure": False,
        "target": {"identifier": item.resource.id, "instance_class": plan_["instance_class"], "multi_az": False,
                   "publicly_accessible": False, "security_groups": [pair["db_security_group"]],
                   "tags": throwaway_tags(test)},
    }
    return {"image": image.model_dump(), "restore_input": restore_input, "started_at": time.time()}


def locate(test: dict[str, Any]) -> dict[str, Any]:
    """The restored throwaway's endpoint and port, into the worker's state (after the restore)."""
    item = Item.model_validate(test)
    res = item.resource
    db = database.describe(_client(test, "rds"), res.kind, res.id, f"account {res.account} region {res.region}")
    if db.raw.get("PubliclyAccessible"):
        raise SecurityGroupError(f"throwaway {res.id} is publicly accessible; refusing to test it")
    groups = set(db.group_ids)
    image = item.image
    assert image is not None
    if groups != {image.db_security_group}:
        raise SecurityGroupError(
            f"throwaway {res.id} has security groups {sorted(groups)}; a restore test needs only its own "
            f"{image.db_security_group}")
    # located_at: when the throwaway was found available (the restore's end, for the time to restore)
    return {**image.model_dump(), "endpoint": db.endpoint, "port": db.port, "located_at": round(time.time(), 3)}


def _gone(exc: ClientError) -> bool:
    return aws_errors.error_code(exc) in ("DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault",
                                           "DBClusterNotFound")


def _is_ours(tags: list[dict[str, str]], test: dict[str, Any]) -> bool:
    values = {t["Key"]: t.get("Value") for t in tags}
    return values.get(RESTORE_TEST_TAG) == test["source"]["arn"] and values.get(names.SESSION_TAG) == test["session_id"]


def delete_throwaway(test: dict[str, Any], restore_roles: dict[str, str] | None = None) -> dict[str, Any]:
    """Delete the throwaway (its instances first for a cluster; no final snapshot). Only a database that
    carries this run's restore-test tags is deleted. Returns ``{"done", "deleted", "left_for_sweeper",
    "warnings"}``; ``done`` once nothing of it is left."""
    res = test["resource"]
    # the restore role may delete what a restore made (the throwaway carries its rdsbackup:restore tag)
    role = (restore_roles or {}).get(f"{res['account']}/{res['region']}") or test.get("access_role_arn")
    rds = aws_sessions.client("rds", res["region"], role, test["session_id"])
    report: dict[str, Any] = {"done": False, "deleted": [], "left_for_sweeper": [], "warnings": []}
    try:
        if res["kind"] == "cluster":
            cluster = rds.describe_db_clusters(DBClusterIdentifier=res["id"])["DBClusters"][0]
            members = [m["DBInstanceIdentifier"] for m in cluster.get("DBClusterMembers") or []]
            tags, arn = cluster.get("TagList") or [], cluster["DBClusterArn"]
        else:
            instance = rds.describe_db_instances(DBInstanceIdentifier=res["id"])["DBInstances"][0]
            members, tags, arn = [], instance.get("TagList") or [], instance["DBInstanceArn"]
    except ClientError as exc:
        if _gone(exc):
            report["done"] = True
            return report
        raise
    if not tags:
        tags = rds.list_tags_for_resource(ResourceName=arn).get("TagList") or []
    if previous_deleting(test):  # asked already: only wait for it to go
        report["done"] = _deleted(rds, res)
        return _next_poll(test, report, rds, arn)
    if not _is_ours(tags, test):
        report["warnings"].append(f"{res['id']} does not carry this restore test's tags; it was left alone")
        report["done"] = True
        return report
    targets = [("instance", member) for member in members] + [(res["kind"], res["id"])]
    for kind, ident in targets:
        try:
            if kind == "cluster":
                rds.delete_db_cluster(DBClusterIdentifier=ident, SkipFinalSnapshot=True)
            else:
                rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True,
                                       DeleteAutomatedBackups=True)
            report["deleted"].append(ident)
        except ClientError as exc:
            if _gone(exc) or aws_errors.error_code(exc) in ("InvalidDBInstanceState", "InvalidDBInstanceStateFault",
                                                            "InvalidDBClusterStateFault"):
                continue  # gone, or already being deleted
            report["warnings"].append(f"delete {ident}: {aws_errors.error_code(exc)}: {aws_errors.error_message(exc)}")
            _tag_for_sweeper(rds, arn if ident == res["id"] else None, ident, res, report)
    report["done"] = bool(report["left_for_sweeper"]) or _deleted(rds, res)
    return _next_poll(test, report, rds, arn)


def _next_poll(test: dict[str, Any], report: dict[str, Any], rds: Any, arn: str) -> dict[str, Any]:
    """The wait before the next check while the deletion runs; past the wait's timeout the throwaway is
    left to the sweeper (tagged) and the loop ends."""
    previous = test.get("throwaway_cleanup")
    state = PollState.model_validate(previous) if previous else None
    wait = WaitSettings.model_validate(test.get("wait") or {})
    try:
        poll = next_poll(state, wait, ready=report["done"], timeout_error=CleanupIncomplete,
                         what=f"the deletion of {test['resource']['id']}")
    except CleanupIncomplete as exc:
        report["warnings"].append(str(exc))
        _tag_for_sweeper(rds, arn, test["resource"]["id"], test["resource"], report)
        report["done"] = True
        poll = {"attempt": (state.attempt if state else 0) + 1, "wait_seconds": 0,
                "waited_seconds": state.waited_seconds + state.wait_seconds if state else 0}
    # the deletions already asked for carry over to the next check
    report["deleted"] = list(dict.fromkeys([*((previous or {}).get("deleted") or []), *report["deleted"]]))
    return {**report, **poll}


def previous_deleting(test: dict[str, Any]) -> bool:
    return bool((test.get("throwaway_cleanup") or {}).get("deleted"))


def _tag_for_sweeper(rds: Any, arn: str | None, ident: str, res: dict[str, Any], report: dict[str, Any]) -> None:
    arn = arn or f"arn:aws:rds:{res['region']}:{res['account']}:db:{ident}"
    try:
        rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": names.SWEEP_TAG, "Value": "true"}])
    except ClientError as exc:
        report["warnings"].append(f"tag {ident} for the sweeper: {aws_errors.error_code(exc)}")
    report["left_for_sweeper"].append(f"{'DB cluster' if ':cluster:' in arn else 'DB instance'} {ident}")


def _deleted(rds: Any, res: dict[str, Any]) -> bool:
    try:
        if res["kind"] == "cluster":
            rds.describe_db_clusters(DBClusterIdentifier=res["id"])
        else:
            rds.describe_db_instances(DBInstanceIdentifier=res["id"])
    except ClientError as exc:
        if _gone(exc):
            return True
        raise
    return False
