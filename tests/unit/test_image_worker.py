"""start_worker and check_worker: the run_task request, retries finding the task, and every outcome."""

from __future__ import annotations

import json
import time
from unittest import mock

import botocore.client
import pytest
from rdsbackup_lambdas.errors import WorkerFailed, WorkerTimedOut
from rdsbackup_lambdas.handlers import check_worker, prepare_worker, start_worker
from rdsbackup_lambdas.image import names

from tests.unit.conftest import SOURCE_ACCOUNT
from tests.unit.image_support import (  # noqa: F401 (net_fixture: the net fixture)
    CLUSTER,
    CONTAINER,
    FAMILY,
    finish_task,
    moto_task,
    net_fixture,
    tasks_stay_running,
)

_real_make_api_call = botocore.client.BaseClient._make_api_call


@pytest.fixture
def started(net, ctx):
    """An ITEM whose worker was prepared and started (tasks stay RUNNING until the test decides)."""
    with tasks_stay_running():
        item = net.item(net.instance())
        item["image"] = prepare_worker.handler(item, ctx)
        item["image"] = start_worker.handler(item, ctx)
        yield item


def capture_run_task(answer: dict | None = None):
    """Record the RunTask requests and let them through to moto (or answer ``answer`` instead)."""
    calls: list[dict] = []

    def fake(self, operation_name, params):
        if operation_name == "RunTask":
            calls.append(params)
            if answer is not None:
                return answer
        return _real_make_api_call(self, operation_name, params)

    return calls, mock.patch("botocore.client.BaseClient._make_api_call", fake)


def job_of(request: dict) -> dict:
    [override] = request["overrides"]["containerOverrides"]
    [env] = override["environment"]
    assert env["name"] == "RDSBACKUP_JOB"
    return json.loads(env["value"])


def test_fargate_run_task_request(net, ctx):
    item = net.item(net.instance())
    item["image"] = prepare_worker.handler(item, ctx)
    calls, patch = capture_run_task()
    with patch:
        image = start_worker.handler(item, ctx)
    [request] = calls
    assert request["cluster"] == CLUSTER and request["taskDefinition"] == FAMILY and request["count"] == 1
    assert request["launchType"] == "FARGATE" and "capacityProviderStrategy" not in request
    assert request["networkConfiguration"] == {"awsvpcConfiguration": {
        "subnets": net.subnets, "securityGroups": [item["image"]["worker_security_group"]],
        "assignPublicIp": "DISABLED"}}
    assert request["startedBy"] == names.started_by(item["session_id"], item["resource"]["arn"])
    assert len(request["startedBy"]) <= 36 and request["startedBy"].startswith("rdsbackup-")
    [override] = request["overrides"]["containerOverrides"]
    assert override["name"] == CONTAINER and override["command"] == ["job"]
    assert request["overrides"]["cpu"] == "1024" and request["overrides"]["memory"] == "2048"
    assert image["phase"] == "started" and image["task_arn"].startswith("arn:aws:ecs:")
    assert moto_task(image["task_arn"]).started_by == request["startedBy"]


def test_job_spec_follows_the_contract_and_holds_no_secret(net, ctx):
    db = net.instance()
    item = net.item(db)
    item["image"] = prepare_worker.handler(item, ctx)
    calls, patch = capture_run_task()
    with patch:
        start_worker.handler(item, ctx)
    job = job_of(calls[0])
    assert job == {
        "session_id": item["session_id"], "resource_arn": db["DBInstanceArn"], "source_id": "orders",
        "source_resource_id": db["DbiResourceId"], "engine": "postgres", "host": db["Endpoint"]["Address"],
        "port": 5432,
        "secret_arn": db["MasterUserSecret"]["SecretArn"], "databases": None,
        "repository": "s3://rdsbackup-repository/repo",
        "repository_kms_key_arn": item["image_backup"]["repository_kms_key_arn"],
        "retention": {"keep_last": 7, "keep_days": None},
        "result_url": f"s3://rdsbackup-repository/rdsbackup-results/{SOURCE_ACCOUNT}/{item['session_id']}/orders.json",
        "sqlserver": None,
    }
    assert "password" not in json.dumps(calls[0]).lower()


def test_ec2_launch_type_uses_the_capacity_provider(net, ctx):
    # moto cannot place EC2 tasks without container instances: the request is what this test checks.
    item = net.item(net.instance(), launch_type="EC2", capacity_provider="workers-asg", subnets=[net.subnets[0]])
    item["image"] = prepare_worker.handler(item, ctx)
    calls, patch = capture_run_task({"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/w/1"}],
                                     "failures": []})
    with patch:
        start_worker.handler(item, ctx)
    [request] = calls
    assert "launchType" not in request
    assert request["capacityProviderStrategy"] == [{"capacityProvider": "workers-asg", "weight": 1, "base": 0}]
    assert request["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [net.subnets[0]]


def test_retried_start_finds_the_running_task(started, ctx):
    calls, patch = capture_run_task()
    with patch, tasks_stay_running():
        again = start_worker.handler(started, ctx)
    assert calls == [] and again["task_arn"] == started["image"]["task_arn"]


def test_retried_start_finds_a_task_that_already_stopped(started, ctx):
    finish_task(started["image"]["task_arn"], exit_code=0)
    calls, patch = capture_run_task()
    with patch:
        again = start_worker.handler(started, ctx)
    assert calls == [] and again["task_arn"] == started["image"]["task_arn"]


def test_run_task_failures_are_worker_failed(net, ctx):
    item = net.item(net.instance())
    item["image"] = prepare_worker.handler(item, ctx)

    def fake(self, operation_name, params):
        if operation_name == "RunTask":
            return {"tasks": [], "failures": [{"arn": "x", "reason": "RESOURCE:MEMORY", "detail": "no capacity"}]}
        return _real_make_api_call(self, operation_name, params)

    with mock.patch("botocore.client.BaseClient._make_api_call", fake), \
            pytest.raises(WorkerFailed, match=r"RESOURCE:MEMORY.*no capacity"):
        start_worker.handler(item, ctx)


def test_running_worker_is_not_done_and_waits_longer_each_time(started, ctx):
    with tasks_stay_running():
        first = check_worker.handler(started, ctx)
        assert first["done"] is False and first["wait_seconds"] == 5 and first["phase"] == "running"
        second = check_worker.handler({**started, "image": first}, ctx)
    assert second["wait_seconds"] == 10 and second["waited_seconds"] == 5


def test_worker_exit_zero_with_ok_result_is_done(started, net, ctx):
    net.put_result(started, {"status": "ok", "restore_point_id": "rp-123", "bytes": 4096, "new_bytes": 100,
                             "duration_seconds": 12.5, "error": None})
    finish_task(started["image"]["task_arn"], exit_code=0)
    image = check_worker.handler(started, ctx)
    assert image["done"] is True and image["phase"] == "done" and image["wait_seconds"] == 0
    assert (image["restore_point_id"], image["bytes"], image["duration_seconds"]) == ("rp-123", 4096, 12.5)
    assert image["task_arn"] == started["image"]["task_arn"]


def test_worker_non_zero_exit_reports_the_worker_error(started, net, ctx):
    net.put_result(started, {"status": "failed", "error": "pg_dump: connection refused", "restore_point_id": None})
    finish_task(started["image"]["task_arn"], exit_code=1)
    with pytest.raises(WorkerFailed, match=r"pg_dump: connection refused \(exit code 1\)"):
        check_worker.handler(started, ctx)


def test_worker_crash_without_result_reports_the_container_reason(started, ctx):
    finish_task(started["image"]["task_arn"], exit_code=137, reason="OutOfMemoryError: Container killed")
    with pytest.raises(WorkerFailed, match=r"OutOfMemoryError.*exit code 137"):
        check_worker.handler(started, ctx)


def test_worker_stopped_without_an_exit_code_is_a_failure(started, ctx):
    finish_task(started["image"]["task_arn"], exit_code=None, stopped_reason="Task stopped by user")
    with pytest.raises(WorkerFailed, match="worker stopped without an exit code: Task stopped by user"):
        check_worker.handler(started, ctx)


def test_worker_that_failed_to_start(started, ctx):
    finish_task(started["image"]["task_arn"], exit_code=None, stop_code="TaskFailedToStart",
                stopped_reason="CannotPullContainerError: image not found")
    with pytest.raises(WorkerFailed, match="failed to start: CannotPullContainerError"):
        check_worker.handler(started, ctx)


def test_exit_zero_without_result_document_is_a_failure(started, ctx):
    finish_task(started["image"]["task_arn"], exit_code=0)
    with pytest.raises(WorkerFailed, match="wrote no result document"):
        check_worker.handler(started, ctx)


def test_worker_past_its_timeout_is_stopped(started, ctx):
    started["image_backup"]["worker"]["timeout_seconds"] = 30
    previous = {**started["image"], "attempt": 3, "wait_seconds": 20, "waited_seconds": 15}
    with tasks_stay_running(), pytest.raises(WorkerTimedOut, match="timeout is 30 s"):
        check_worker.handler({**started, "image": previous}, ctx)
    task = moto_task(started["image"]["task_arn"])
    assert task.desired_status == "STOPPED" and "timed out" in task.stopped_reason


def test_wall_clock_timeout_counts_too(started, ctx):
    started["image_backup"]["worker"]["timeout_seconds"] = 60
    previous = {**started["image"], "started_at": time.time() - 120}
    with tasks_stay_running(), pytest.raises(WorkerTimedOut, match="ran 12"):
        check_worker.handler({**started, "image": previous}, ctx)
    assert moto_task(started["image"]["task_arn"]).desired_status == "STOPPED"
