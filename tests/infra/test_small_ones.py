"""Item 11 of docs/security.md on the synthesized templates of both configs: the scheduler roles trust only
this app's schedule group in this account; the logs grant on the control key names its source; the sweeper
has a dead-letter queue and an alarm; the worker tasks name the accounts that must own their buckets."""

import pytest

from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.infra.conftest import PROD_A, PROD_B, flatten, resources_of

GROUP = f"arn:<AWS::Partition>:scheduler:{REGION}:{CONTROL_ACCOUNT}:schedule-group/rdsbackup-schedules"


@pytest.fixture(params=["e2e", "multi"])
def both(request, templates, multi_templates):
    return templates if request.param == "e2e" else multi_templates


def _roles(template: dict, prefix: str) -> list[dict]:
    return [role["Properties"] for logical, role in resources_of(template, "AWS::IAM::Role").items()
            if logical.startswith(prefix)]


def test_scheduler_roles_trust_only_the_apps_schedule_group_in_this_account(both):
    control = both["RdsBackupControl"]
    roles = _roles(control, "SchedulerRole") + _roles(control, "MaintenanceSchedulerRole")
    assert roles
    for role in roles:
        (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
        assert {key: flatten(value) for key, value in statement["Condition"]["StringEquals"].items()} == {
            "aws:SourceAccount": CONTROL_ACCOUNT, "aws:SourceArn": GROUP}
    (group,) = resources_of(control, "AWS::Scheduler::ScheduleGroup").values()
    schedules = resources_of(control, "AWS::Scheduler::Schedule").values()
    assert schedules and {s["Properties"]["GroupName"] for s in schedules} == {group["Properties"]["Name"]}


def test_logs_may_use_the_control_key_only_for_this_accounts_log_groups(both):
    control = both["RdsBackupControl"]
    key = next(k for logical, k in resources_of(control, "AWS::KMS::Key").items() if logical.startswith("Key"))
    (statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                    if "logs." in flatten(s.get("Principal", {}))]
    log_groups = f"arn:<AWS::Partition>:logs:{REGION}:{CONTROL_ACCOUNT}:log-group:*"
    condition = statement["Condition"]
    assert flatten(condition["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]) == log_groups
    assert flatten(condition["ArnLikeIfExists"]["aws:SourceArn"]) == log_groups
    assert flatten(condition["StringEqualsIfExists"]["aws:SourceAccount"]) == CONTROL_ACCOUNT


def test_the_sweeper_has_a_dead_letter_queue_with_an_alarm_to_the_topic(both):
    control = both["RdsBackupControl"]
    (rule,) = [r["Properties"] for logical, r in resources_of(control, "AWS::Events::Rule").items()
               if logical.startswith("SweepSchedule")]
    (target,) = rule["Targets"]
    queue = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert control["Resources"][queue]["Type"] == "AWS::SQS::Queue"
    key = next(logical for logical in resources_of(control, "AWS::KMS::Key") if logical.startswith("Key"))
    assert control["Resources"][queue]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    topic = next(logical for logical in resources_of(control, "AWS::SNS::Topic"))
    alarms = [a["Properties"] for a in resources_of(control, "AWS::CloudWatch::Alarm").values()
              if a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue, "QueueName"]}]
    (alarm,) = alarms
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 1
    assert alarm["AlarmActions"] == [{"Ref": topic}]


def _task_environment(template: dict) -> dict[str, str]:
    (task,) = resources_of(template, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    return {e["Name"]: flatten(e["Value"]) for e in container.get("Environment", [])}


def test_worker_tasks_name_the_owners_of_the_buckets_they_reach(templates, multi_templates):
    for account in (PROD_A, PROD_B):
        environment = _task_environment(multi_templates[f"RdsBackupAccess-{account}-{REGION}"])
        assert environment["RDSBACKUP_REPOSITORY_OWNER"] == CONTROL_ACCOUNT
        assert environment["RDSBACKUP_TEMP_BUCKET_OWNER"] == account
    environment = _task_environment(templates["RdsBackupAccess"])
    assert environment["RDSBACKUP_REPOSITORY_OWNER"] == environment["RDSBACKUP_TEMP_BUCKET_OWNER"] == CONTROL_ACCOUNT
    # the backup account's maintenance worker
    assert _task_environment(multi_templates["RdsBackupControl"])["RDSBACKUP_REPOSITORY_OWNER"] == CONTROL_ACCOUNT


def test_every_function_names_the_backup_account_as_the_owner_of_the_buckets_it_reaches(both):
    """The Lambdas' S3 clients send it as ExpectedBucketOwner (rdsbackup_lambdas.aws_sessions)."""
    functions = resources_of(both["RdsBackupControl"], "AWS::Lambda::Function")
    assert len(functions) > 20
    for logical, function in functions.items():
        environment = function["Properties"]["Environment"]["Variables"]
        assert flatten(environment["RDSBACKUP_REPOSITORY_OWNER"]) == CONTROL_ACCOUNT, logical
