"""cleanup_worker: every path, DependencyViolation retries, the sweeper tag, idempotence."""

from __future__ import annotations

from unittest import mock

import botocore.client
from botocore.exceptions import ClientError
from rdsbackup_lambdas.handlers import cleanup_worker, prepare_worker, release_lease, start_worker

from tests.unit.image_support import (  # noqa: F401 (net_fixture: the net fixture)
    finish_task,
    moto_task,
    net_fixture,
    tasks_stay_running,
)

_real_make_api_call = botocore.client.BaseClient._make_api_call


def dependency_violations(times: int, calls: list[str]):
    """DeleteSecurityGroup fails with DependencyViolation ``times`` times (an ENI still detaching), and, as
    AWS does (moto does not), whenever another group's rule still references the group."""
    left = {"n": times}

    def fake(self, operation_name, params):
        if operation_name == "DeleteSecurityGroup":
            calls.append(params["GroupId"])
            everything = _real_make_api_call(self, "DescribeSecurityGroups", {})["SecurityGroups"]
            for group in everything:
                for perm in group.get("IpPermissions", []) + group.get("IpPermissionsEgress", []):
                    if any(p.get("GroupId") == params["GroupId"] for p in perm.get("UserIdGroupPairs", [])):
                        raise ClientError({"Error": {"Code": "DependencyViolation", "Message":
                                           f"resource {params['GroupId']} has a dependent object"}}, operation_name)
            if left["n"] > 0:
                left["n"] -= 1
                raise ClientError({"Error": {"Code": "DependencyViolation", "Message": "ENI in use"}}, operation_name)
        return _real_make_api_call(self, operation_name, params)

    return mock.patch("botocore.client.BaseClient._make_api_call", fake)


def prepared(net, ctx, *, start: bool = False) -> dict:
    item = net.item(net.instance())
    item["image"] = prepare_worker.handler(item, ctx)
    if start:
        item["image"] = start_worker.handler(item, ctx)
    return item


def test_cleanup_after_success_removes_everything(net, ctx):
    item = prepared(net, ctx, start=True)
    finish_task(item["image"]["task_arn"], exit_code=0)
    calls: list[str] = []
    with dependency_violations(0, calls):
        result = cleanup_worker.handler(item, ctx)
    assert result["complete"] is True and result["left_for_sweeper"] == [] and result["warnings"] == []
    assert net.temporary_groups() == []
    assert net.groups_of("orders") == [net.db_group]
    assert len(calls) == 2  # each group deleted at the first try: their cross-references were revoked first


def test_cleanup_stops_a_running_worker(net, ctx):
    with tasks_stay_running():
        item = prepared(net, ctx, start=True)
        result = cleanup_worker.handler(item, ctx)
    assert f"task {item['image']['task_arn']}" in result["removed"]
    assert moto_task(item["image"]["task_arn"]).desired_status == "STOPPED"
    assert result["complete"] is True


def test_cleanup_finds_a_task_start_worker_never_reported(net, ctx):
    with tasks_stay_running():
        item = prepared(net, ctx)
        task_arn = start_worker.handler(item, ctx)["task_arn"]  # the state machine lost this result
        result = cleanup_worker.handler(item, ctx)
    assert f"task {task_arn}" in result["removed"]


def test_dependency_violation_is_retried_until_the_group_goes(net, ctx):
    item = prepared(net, ctx)
    calls: list[str] = []
    with dependency_violations(2, calls):
        result = cleanup_worker.handler(item, ctx)
    assert result["complete"] is True and net.temporary_groups() == []
    assert len(calls) == 4  # two refusals, then both groups deleted


def test_cleanup_gives_up_and_tags_the_group_for_the_sweeper(net, ctx):
    item = prepared(net, ctx)
    calls: list[str] = []
    with dependency_violations(100, calls):
        result = cleanup_worker.handler(item, ctx)
    assert result["complete"] is False and len(result["left_for_sweeper"]) == 2
    assert any("DependencyViolation" in w for w in result["warnings"])
    assert len(calls) == 6  # SG_DELETE_ATTEMPTS=3 per group
    for group in net.temporary_groups():
        assert {"Key": "rdsbackup:sweep", "Value": "true"} in group["Tags"]
    assert net.groups_of("orders") == [net.db_group]  # the DB was still detached: steps are independent


def test_left_for_sweeper_becomes_a_warning_in_the_session_report(net, ctx):
    item = prepared(net, ctx)
    with dependency_violations(100, []):
        item["image_cleanup"] = cleanup_worker.handler(item, ctx)
    item["lease"] = {"owner": item["session_id"], "expires_at": 0, "acquired_at": 1.0}
    recorded = release_lease.handler(item, ctx)  # the resource's result, as the session report reads it
    assert recorded["status"] == "Success"
    assert any(w.startswith("left for the orphan sweeper") for w in recorded["warnings"])


def test_cleanup_when_nothing_was_made(net, ctx):
    item = net.item(net.instance())  # prepare_worker never ran
    result = cleanup_worker.handler(item, ctx)
    assert result == {"complete": True, "removed": [], "left_for_sweeper": [], "warnings": []}


def test_cleanup_finds_groups_of_a_prepare_that_failed_midway(net, ctx):
    item = net.item(net.instance())
    prepare_worker.handler(item, ctx)  # its result never reached the state machine
    result = cleanup_worker.handler(item, ctx)
    assert result["complete"] is True and net.temporary_groups() == []
    assert net.groups_of("orders") == [net.db_group]


def test_cleanup_twice_is_harmless(net, ctx):
    item = prepared(net, ctx, start=True)
    first = cleanup_worker.handler(item, ctx)
    second = cleanup_worker.handler(item, ctx)
    assert first["complete"] and second["complete"] and second["removed"] == []


def test_groups_the_user_added_meanwhile_stay_on_the_db(net, ctx):
    item = prepared(net, ctx)
    user_group = net.ec2().create_security_group(GroupName="added-later", Description="x", VpcId=net.vpc)["GroupId"]
    current = net.groups_of("orders")
    net.rds().modify_db_instance(DBInstanceIdentifier="orders", VpcSecurityGroupIds=[*current, user_group],
                                 ApplyImmediately=True)
    cleanup_worker.handler(item, ctx)
    assert net.groups_of("orders") == [net.db_group, user_group]


def test_a_failing_step_does_not_stop_the_others(net, ctx):
    item = prepared(net, ctx)

    def fake(self, operation_name, params):
        if operation_name == "ListTasks":
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, operation_name)
        return _real_make_api_call(self, operation_name, params)

    with mock.patch("botocore.client.BaseClient._make_api_call", fake):
        result = cleanup_worker.handler(item, ctx)
    assert result["complete"] is False and any("stop the worker" in w for w in result["warnings"])
    assert net.temporary_groups() == [] and net.groups_of("orders") == [net.db_group]
