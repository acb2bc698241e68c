"""Keys (issue 14 item 7): a dedicated tag-metadata key used only by the steps that write or read
metadata, with the snapshot-binding encryption context; the control key only through DynamoDB/SNS."""

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


def test_the_control_key_is_used_only_through_dynamodb_and_sns(control_template):
    control_key = _key(control_template, "Key")
    for role, statements in role_statements(control_template).items():
        if not role.startswith("rdsbackup-step-"):
            continue  # the state machines' own roles (CDK's grants for their logs and results)
        for statement in statements:
            if f"<{control_key}.Arn>" in [flatten(r) for r in as_list(statement["Resource"])]:
                if role.startswith(("rdsbackup-step-resolve-policy-", "rdsbackup-step-session-report-")):
                    continue  # CDK's grants for the session-results bucket (issue 11): not yet narrowed
                assert "kms:ViaService" in flatten(statement.get("Condition", {})), role


def test_logs_use_the_control_key_only_for_this_accounts_log_groups(control_template):
    control_key = resources_of(control_template, "AWS::KMS::Key")[_key(control_template, "Key")]
    (logs,) = [s for s in control_key["Properties"]["KeyPolicy"]["Statement"]
               if "logs." in flatten(s.get("Principal", {}))]
    assert "kms:EncryptionContext:aws:logs:arn" in flatten(logs["Condition"])
