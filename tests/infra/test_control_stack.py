"""The control stack: the state machine's flow, retries and catches; IAM; schedules; encryption."""

import json

import pytest

from tests.e2e.configs import E2E_CONFIG
from tests.infra.conftest import definition_of, flatten, resources_of, state_machine


@pytest.fixture(scope="module")
def definition(control_template) -> dict:
    return definition_of(state_machine(control_template, "BackupStateMachine"))


@pytest.fixture(scope="module")
def item_states(control_template) -> dict:
    """The states of one resource's execution."""
    return definition_of(state_machine(control_template, "ResourceBackupStateMachine"))["States"]


def test_every_state_machine_is_standard_logged_and_traced(control_template):
    machines = resources_of(control_template, "AWS::StepFunctions::StateMachine")
    for logical, machine in machines.items():
        properties = machine["Properties"]
        assert properties["StateMachineType"] == "STANDARD", logical
        assert properties["TracingConfiguration"] == {"Enabled": True}, logical
        assert properties["LoggingConfiguration"]["Level"] == "ALL", logical
        (destination,) = properties["LoggingConfiguration"]["Destinations"]
        assert "KmsKeyId" in resources_of(control_template, "AWS::Logs::LogGroup")[
            destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]]["Properties"], logical


def test_each_workflow_has_its_own_output(control_template):
    outputs = control_template["Outputs"]
    backup = outputs["BackupStateMachineArn"]["Value"]
    assert backup == {"Ref": next(logical for logical in resources_of(control_template,
                                                                       "AWS::StepFunctions::StateMachine")
                                  if logical.startswith("BackupStateMachine"))}
    assert outputs["StateMachineArn"]["Value"] == backup  # kept for scripts written before the restore workflow


# Logical ids of deployed resources as the first release made them: renaming a construct that owns a
# function, role, log group or state machine replaces it on the next deploy (new log group, lost logs).
DEPLOYED_IDS = {
    "CreateSnapshotFunctionA18FF3B5", "CreateSnapshotRoleF52ACD8C", "CreateSnapshotLogsDC63F040",
    "CleanupWorkerFunctionD6859232", "SessionReportLogs33F398F7", "SweepOrphansFunctionF938D8C5",
    "StateMachineLogs3CB16D3C", "BackupStateMachineRole7CD8A628", "BackupStateMachineF76F7D01",
}


def test_deployed_ids_are_kept(control_template):
    assert not DEPLOYED_IDS - set(control_template["Resources"])


def test_flow_resolves_then_maps_then_reports(definition):
    states = definition["States"]
    assert states["Resolve policy"]["Next"] == "Back up each resource"
    each = states["Back up each resource"]
    assert each["Next"] == "Session report"
    assert each["MaxConcurrencyPath"] == "$.session.max_concurrency"
    # a Distributed Map over the items in S3, results to S3: nothing grows with the number of resources
    assert each["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert each["ItemReader"]["Parameters"]["Key.$"] == "$.session.items_key"
    assert "ResultWriter" in each and each["ResultPath"] is None
    assert "ItemsPath" not in each
    start = each["ItemProcessor"]["States"]["Back up resource"]
    assert start["Resource"].endswith(":states:startExecution.sync:2")
    assert start["Parameters"]["Name.$"] == "$.name" and start["Parameters"]["Input.$"] == "$.item"
    assert each["ItemSelector"]["name.$"] == "States.Format('{}-{}', $.session.session_id, $$.Map.Item.Index)"
    assert start["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    assert states["Resolve policy"]["Catch"][0]["Next"] == "Report failed session"
    assert states["Session failed?"]["Choices"][0]["Next"] == "Failure cause"
    assert states["Session failed"]["Type"] == "Fail"


def test_every_step_after_the_lease_is_caught_into_release(item_states):
    guarded = ["Create snapshot", "Check snapshot", "Tag snapshot", "Replicate snapshot", "Apply retention"]
    for name in guarded:
        catches = item_states[name]["Catch"]
        assert catches == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Release lease"}], name
    assert item_states["Apply retention"]["Next"] == "Release lease"
    assert item_states["Release lease"]["End"] is True and item_states["Release lease"]["ResultPath"] == "$"
    assert item_states["Acquire lease"]["Catch"][0]["Next"] == "Release lease"


def test_snapshot_and_replica_waits_are_wait_choice_loops(item_states):
    assert item_states["Wait for snapshot"]["SecondsPath"] == "$.snapshot_wait.wait_seconds"
    assert item_states["Wait for snapshot"]["Next"] == "Check snapshot"
    assert item_states["Snapshot ready?"]["Default"] == "Wait for snapshot"
    assert item_states["Wait for replica"]["Next"] == "Replicate snapshot"
    assert item_states["Replica done?"]["Default"] == "Wait for replica"
    # no snapshot slot free: wait and create again
    assert item_states["Create snapshot"]["Next"] == "Snapshot started?"
    assert item_states["Snapshot started?"]["Default"] == "Wait for slot"
    assert item_states["Wait for slot"]["SecondsPath"] == "$.snapshot.wait_seconds"
    assert item_states["Wait for slot"]["Next"] == "Create snapshot"


def test_the_session_can_read_its_items_and_write_its_map_results(control_template):
    statements = list(_statements(control_template, "BackupStateMachineRole"))
    s3 = [s for s in statements if "s3:GetObject" in flatten(s["Action"])]
    assert s3 and all("SessionsBucket" in flatten(s["Resource"]) for s in s3)
    kms = [s for s in statements if "kms:Decrypt" in flatten(s["Action"])]
    assert kms and "kms:GenerateDataKey" in flatten(kms[0]["Action"]) and "<Key" in flatten(kms[0]["Resource"])
    start = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert [flatten(s["Resource"]) for s in start] == ["<ResourceBackupStateMachineE40E6788>"]


def test_timeouts_are_derived_from_the_policies(control_template):
    from infra.config import parse_config
    from infra.durations import resource_timeout_seconds, session_timeout_seconds
    from tests.e2e.configs import CONTROL_ACCOUNT, REGION

    config = parse_config(E2E_CONFIG, default_account=CONTROL_ACCOUNT, default_region=REGION)
    session = definition_of(state_machine(control_template, "BackupStateMachine"))
    resource = definition_of(state_machine(control_template, "ResourceBackupStateMachine"))
    assert resource["TimeoutSeconds"] == resource_timeout_seconds(config)
    assert session["TimeoutSeconds"] == session_timeout_seconds(config)
    # at most 1,000 resources at concurrency 2 (the slowest policy): 500 resources one after another
    assert session["TimeoutSeconds"] > 500 * resource["TimeoutSeconds"] / 2


def _retry(state, error):
    return next(retry for retry in state["Retry"] if error in retry["ErrorEquals"])


def test_quota_throttling_and_unavailable_db_are_retried_with_jitter(item_states):
    timing = E2E_CONFIG["timing"]
    for error in ("SnapshotQuotaExceeded", "Throttled"):
        retry = _retry(item_states["Create snapshot"], error)
        assert retry["JitterStrategy"] == "FULL"
        assert retry["MaxAttempts"] == timing["retry_max_attempts"]
        assert retry["IntervalSeconds"] == timing["retry_interval_seconds"]
    unavailable = _retry(item_states["Create snapshot"], "DBNotAvailable")
    assert unavailable["MaxAttempts"] == timing["not_available_max_attempts"]
    assert _retry(item_states["Replicate snapshot"], "SnapshotQuotaExceeded")["JitterStrategy"] == "FULL"


def test_one_schedule_per_policy_with_time_zone_and_policy_input(control_template):
    schedules = resources_of(control_template, "AWS::Scheduler::Schedule")
    by_name = {s["Properties"]["Name"]: s["Properties"] for s in schedules.values()}
    # plus each restore-test schedule, and for every policy with image-level backup its backup-account
    # session (archive, retention)
    assert set(by_name) == {f"rdsbackup-{p['name']}" for p in E2E_CONFIG["policies"]} | {
        f"rdsbackup-test-{p['name']}" for p in E2E_CONFIG["policies"] if "restore_test" in p} | {
        f"rdsbackup-{p['name']}-maintenance" for p in E2E_CONFIG["policies"] if p.get("image_backup")}
    nightly = by_name["rdsbackup-nightly"]
    assert nightly["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert nightly["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert json.loads(nightly["Target"]["Input"]) == {"policy": "nightly"}


def _statements(template, role_prefix):
    policies = resources_of(template, "AWS::IAM::Policy")
    for logical, policy in policies.items():
        if logical.startswith(role_prefix):
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


def test_lambda_roles_assume_only_named_roles(control_template):
    for step in ("ResolvePolicy", "CreateSnapshot", "CheckSnapshot", "TagSnapshot", "ReplicateSnapshot",
                 "ApplyRetention"):
        statements = list(_statements(control_template, f"{step}Role"))
        assume = [s for s in statements if s["Action"] == "sts:AssumeRole"]
        assert assume, step
        resources = assume[0]["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        assert all(":role/rdsbackup-" in flatten(r) for r in resources), step
        # The control-plane functions hold no RDS permissions themselves: they act through the roles.
        assert not any(str(s["Action"]).startswith("rds:") for s in statements), step


def test_no_wildcard_resource_except_xray(control_template):
    # Actions with no resource-level permissions: X-Ray, log delivery, ECR's token (pulling the maintenance
    # worker's image), EC2 Describe* (its default-VPC lookup); ecs:ListTasks only with its cluster named.
    for logical, policy in resources_of(control_template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == "*":
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if actions == ["cloudwatch:PutMetricData"]:  # no resource-level permission: namespace only
                    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "rdsbackup"}}
                    continue
                if actions == ["ecs:ListTasks"]:
                    assert "ecs:cluster" in json.dumps(statement.get("Condition")), logical
                    continue
                assert all(a.startswith(("xray:", "logs:", "ec2:Describe")) or a == "ecr:GetAuthorizationToken"
                           for a in actions), (logical, actions)


def test_lease_handlers_touch_only_the_session_table(control_template):
    for step in ("AcquireLease", "ReleaseLease"):
        table_statements = [s for s in _statements(control_template, f"{step}Role")
                            if "dynamodb" in flatten(s["Action"])]
        assert table_statements
        for statement in table_statements:
            # the session table (leases, slots); release also records the resource's result
            assert "Sessions" in flatten(statement["Resource"]) or (
                step == "ReleaseLease" and "SessionResults" in flatten(statement["Resource"]))


def test_everything_is_encrypted_with_a_rotating_customer_key(control_template):
    keys = resources_of(control_template, "AWS::KMS::Key").values()
    assert len(keys) == 3  # control (table, topic, logs), tag metadata, and repositories
    assert all(key["Properties"]["EnableKeyRotation"] is True for key in keys)
    tables = resources_of(control_template, "AWS::DynamoDB::Table").values()
    assert len(tables) == 2  # sessions (records, leases, slots) and per-resource results
    for table in tables:
        assert table["Properties"]["SSESpecification"]["SSEType"] == "KMS"
        assert table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    (topic,) = resources_of(control_template, "AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    (topic_policy,) = resources_of(control_template, "AWS::SNS::TopicPolicy").values()
    denies = [s for s in topic_policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _policies_of(cdk_out, function: dict) -> tuple[dict, dict]:
    """The policies file in a function's code package, and the function's environment."""
    environment = function["Properties"]["Environment"]["Variables"]
    asset = cdk_out / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    return (asset / environment["POLICIES_FILE"]).read_bytes(), environment


def test_policies_ship_with_the_code_without_secrets_and_pinned_by_hash(control_template, cdk_out):
    import hashlib

    functions = resources_of(control_template, "AWS::Lambda::Function")
    resolve = next(f for logical, f in functions.items() if logical.startswith("ResolvePolicy"))
    raw, environment = _policies_of(cdk_out, resolve)
    assert environment["POLICIES_SHA256"] == hashlib.sha256(raw).hexdigest()
    assert not resources_of(control_template, "AWS::SSM::Parameter"), "no policies parameter to change at run time"
    policies = json.loads(raw)
    assert set(policies) == {p["name"] for p in E2E_CONFIG["policies"]}
    vault = policies["vault"]["replication"]
    assert vault["account"] == "222222222222"
    assert vault["access_role_arn"] == "arn:aws:iam::222222222222:role/rdsbackup-replica-us-east-1"
    assert vault["kms_key_arn"] == "arn:aws:kms:us-east-1:222222222222:alias/rdsbackup-replica"
    assert policies["nightly"]["replication"] is None
    # the repository key's ARN is known only at deploy: a placeholder, resolved through the environment
    key = policies["images"]["image_backup"]["repository_kms_key_arn"]
    assert key == "{{policies-token:0}}"
    assert flatten(environment["POLICIES_TOKEN_0"]).startswith("<RepositoriesKey")
    for word in ("password", "secret_value", "SecretString"):
        assert word not in raw.decode()


def test_image_backup_steps_all_end_in_cleanup(item_states):
    for name in ("Prepare worker", "Start worker", "Check worker"):
        assert item_states[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Clean up worker"}], name
    assert item_states["Worker done?"]["Choices"][0]["Next"] == "Clean up worker"
    assert item_states["Clean up worker"]["Next"] == "Image backup failed?"
    assert item_states["Clean up worker"]["Catch"][0]["Next"] == "Release lease"
    failed = item_states["Image backup failed?"]
    assert failed["Choices"][0]["Next"] == "Release lease" and failed["Default"] == "Apply retention"
    assert item_states["Replica done?"]["Choices"][0]["Next"] == "Image backup?"
    assert item_states["Image backup?"]["Default"] == "Apply retention"


def test_repository_buckets_are_encrypted_tls_only_and_private(control_template):
    buckets = {logical: b for logical, b in resources_of(control_template, "AWS::S3::Bucket").items()
               if logical.startswith("RepositoriesRepositorymain")}
    (bucket,) = buckets.values()
    properties = bucket["Properties"]
    assert properties["BucketName"] == "rdsbackup-main-123456789012-us-east-1"
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert properties["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    policies = [p for p in resources_of(control_template, "AWS::S3::BucketPolicy").values()
                if flatten(p["Properties"]["Bucket"]) == f"<{next(iter(buckets))}>"]
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)
    workers = [s for s in statements if s["Effect"] == "Allow"]
    assert workers and all(
        s["Condition"]["ArnEquals"]["aws:PrincipalArn"] == "arn:aws:iam::123456789012:role/rdsbackup-worker-us-east-1"
        for s in workers)
