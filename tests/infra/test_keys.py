"""Keys (issue 14 item 7): a dedicated tag-metadata key used only by the steps that write or read
metadata, with the snapshot-binding encryption context; the control key only through DynamoDB/SNS/S3;
the sessions bucket's objects only to the steps that write or read them."""

import pytest

from tests.infra.conftest import as_list, flatten, resources_of, role_statements

TAG_STEPS = {"tag-snapshot": {"kms:GenerateDataKey"},
             "replicate-snapshot": {"kms:GenerateDataKey", "kms:Decrypt"},
             "apply-retention": {"kms:Decrypt"},
             "plan-restore": {"kms:Decrypt"}}  # the restore checks the metadata it restores from


def _key(template, fragment):
    (logical,) = [k for k in resources_of(template, "AWS::KMS::Key") if k.startswith(fragment)]
    return logical


def test_tag_metadata_has_its_own_key_used_only_by_the_metadata_steps(control_template):
    tag_key = _key(control_template, "TagKey")
    users = {}
    for role, statements in role_statements(control_template).items():
        for statement in statements:
            if f"<{tag_key}.Arn>" in [flatten(r) for r in as_list(statement["Resource"])]:
                step = role.removeprefix("rdsbackup-step-").removesuffix("-us-east-1")
                users.setdefault(step, set()).update(as_list(statement["Action"]))
                assert statement["Condition"] == {"StringLike": {"kms:EncryptionContext:rdsbackup:snapshot": "*"}}
    assert users == TAG_STEPS
    for function in resources_of(control_template, "AWS::Lambda::Function").values():
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        if "TAG_KMS_KEY_ARN" in env:
            assert flatten(env["TAG_KMS_KEY_ARN"]) == f"<{tag_key}.Arn>"


@pytest.fixture(params=["e2e", "multi-account"], scope="module")
def any_control(request, templates, multi_templates):
    return (templates if request.param == "e2e" else multi_templates)["RdsBackupControl"]


def test_the_control_key_is_used_only_through_dynamodb_sns_and_s3(any_control):
    control_key = _key(any_control, "Key")
    for role, statements in role_statements(any_control).items():
        if not role.startswith("rdsbackup-step-"):
            continue  # the state machines' own roles (CDK's grants for their logs and results)
        for statement in statements:
            if f"<{control_key}.Arn>" in [flatten(r) for r in as_list(statement["Resource"])]:
                assert "kms:ViaService" in flatten(statement.get("Condition", {})), role
                if "s3." in flatten(statement["Condition"]):
                    assert set(as_list(statement["Action"])) <= {"kms:Decrypt", "kms:GenerateDataKey"}, role


# step -> the session objects it reads and writes (lambdas/rdsbackup_lambdas/session_store.py)
SESSION_OBJECTS = {"resolve-policy": {("s3:PutObject", "sessions/*/items.json")},
                   "session-report": {("s3:GetObject", "sessions/*/items.json"),
                                      ("s3:PutObject", "sessions/*/report.json")}}


def test_each_step_reaches_only_the_session_objects_it_writes_or_reads(any_control):
    (bucket,) = [k for k in resources_of(any_control, "AWS::S3::Bucket") if k.startswith("SessionsBucket")]
    found: dict[str, set] = {}
    for role, statements in role_statements(any_control).items():
        if not role.startswith("rdsbackup-step-"):
            continue
        for statement in statements:
            for resource in as_list(statement["Resource"]):
                text = flatten(resource)
                if f"<{bucket}.Arn>" in text or f"<{bucket}>" in text:
                    step = role.removeprefix("rdsbackup-step-").removesuffix("-us-east-1")
                    found.setdefault(step, set()).update(
                        (action, text.split("/", 1)[1] if "/" in text else "(bucket)")
                        for action in as_list(statement["Action"]))
    assert found == SESSION_OBJECTS


def test_logs_use_the_control_key_only_for_this_accounts_log_groups(control_template):
    control_key = resources_of(control_template, "AWS::KMS::Key")[_key(control_template, "Key")]
    (logs,) = [s for s in control_key["Properties"]["KeyPolicy"]["Statement"]
               if "logs." in flatten(s.get("Principal", {}))]
    assert "kms:EncryptionContext:aws:logs:arn" in flatten(logs["Condition"])
