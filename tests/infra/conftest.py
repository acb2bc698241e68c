"""Synthesize the app once per session for the infrastructure tests (no bundling, no network)."""

import json
from pathlib import Path

import pytest

from rdsbackup_local.synth import synthesize
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION


@pytest.fixture(scope="session")
def cdk_out(tmp_path_factory) -> Path:
    out, _ = synthesize(E2E_CONFIG, tmp_path_factory.mktemp("infra") / "cdk.out", account=CONTROL_ACCOUNT,
                        region=REGION)
    return out


@pytest.fixture(scope="session")
def templates(cdk_out) -> dict[str, dict]:
    return {path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in cdk_out.glob("*.template.json")}


@pytest.fixture(scope="session")
def control_template(templates) -> dict:
    return templates["RdsBackupControl"]


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {logical: resource for logical, resource in template["Resources"].items() if resource["Type"] == kind}


def flatten(value) -> str:
    """A definition or policy with intrinsic functions, as one string (references shown as <Logical.Attr>)."""
    if isinstance(value, dict):
        if "Fn::Join" in value:
            return value["Fn::Join"][0].join(flatten(part) for part in value["Fn::Join"][1])
        if "Fn::GetAtt" in value:
            return "<" + ".".join(value["Fn::GetAtt"]) + ">"
        if "Ref" in value:
            return "<" + value["Ref"] + ">"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def state_machine(template: dict, construct_id: str) -> dict:
    """The state machine made under `construct_id` (e.g. "BackupStateMachine") among the template's several."""
    machines = {logical: machine for logical, machine in resources_of(template, "AWS::StepFunctions::StateMachine")
                .items() if logical.startswith(construct_id)}
    assert len(machines) == 1, f"expected one state machine {construct_id}, found {sorted(machines)}"
    return next(iter(machines.values()))


def definition_of(machine: dict) -> dict:
    """A state machine's definition as JSON (references shown as <Logical.Attr>)."""
    return json.loads(flatten(machine["Properties"]["DefinitionString"]))


def deployed_policies(cdk_out: Path, template: dict) -> dict:
    """The policies the handlers read: the file in the functions' code package (infra/policies_bundle.py)."""
    function = next(f for logical, f in resources_of(template, "AWS::Lambda::Function").items()
                    if logical.startswith("ResolvePolicy"))
    environment = function["Properties"]["Environment"]["Variables"]
    asset = cdk_out / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    return json.loads((asset / environment["POLICIES_FILE"]).read_text())


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def role_statements(template: dict) -> dict[str, list[dict]]:
    """Each named role's identity-policy statements (inline AWS::IAM::Policy resources), by role name."""
    names = {logical: flatten(role["Properties"].get("RoleName", logical))
             for logical, role in resources_of(template, "AWS::IAM::Role").items()}
    found: dict[str, list[dict]] = {name: [] for name in names.values()}
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        for ref in policy["Properties"]["Roles"]:
            found[names[ref["Ref"]]] += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def role_trust(template: dict) -> dict[str, list[dict]]:
    """Each role's trust-policy statements, by role name."""
    roles = resources_of(template, "AWS::IAM::Role").items()
    return {flatten(role["Properties"].get("RoleName", logical)):
            role["Properties"]["AssumeRolePolicyDocument"]["Statement"] for logical, role in roles}


PROD_A, PROD_B, VAULT = "333333333333", "444444444444", "222222222222"
BREAK_GLASS = f"arn:aws:iam::{CONTROL_ACCOUNT}:role/rdsbackup-break-glass"
# The reviewed multi-account shape: control (backup) account, two production accounts, a vault account
# for replicas, image-level backup into an Object Lock repository.
MULTI_ACCOUNT_CONFIG = {
    "control": {"account": CONTROL_ACCOUNT, "region": REGION, "organization_id": "o-exampleorg1"},
    "break_glass_role_arn": BREAK_GLASS,
    "repositories": {"vault": {"object_lock_days": 35, "object_lock_mode": "COMPLIANCE"}},
    "policies": [
        {"name": "orders", "schedule": {"expression": "cron(0 3 * * ? *)"},
         "selection": {"resources": ["orders-db"], "accounts": [PROD_A]}, "snapshot_retention": 7,
         "replication": {"account": VAULT}, "image_backup": {"repository": "vault"}},
        {"name": "billing", "schedule": {"expression": "cron(0 4 * * ? *)"},
         "selection": {"tags": {"backup": "billing"}, "accounts": [PROD_B]}, "snapshot_retention": 7,
         "replication": {"account": VAULT}, "image_backup": {"repository": "vault"}},
    ],
}


@pytest.fixture(scope="session")
def multi_cdk_out(tmp_path_factory) -> Path:
    # with the HIPAA and NIST 800-53 R5 packs too: a finding security/acknowledged.json does not accept fails
    out, _ = synthesize(MULTI_ACCOUNT_CONFIG, tmp_path_factory.mktemp("multi") / "cdk.out",
                        account=CONTROL_ACCOUNT, region=REGION, context={"rdsbackup:compliance-packs": True})
    return out


@pytest.fixture(scope="session")
def multi_templates(multi_cdk_out) -> dict[str, dict]:
    return {path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in multi_cdk_out.glob("*.template.json")}


def synth_warnings(cdk_out: Path) -> list[str]:
    """Every warning synth attached to a construct (in the manifest, or each stack's metadata file), as text."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    found = []
    for artifact in manifest["artifacts"].values():
        metadata = dict(artifact.get("metadata") or {})
        if artifact.get("additionalMetadataFile"):
            metadata.update(json.loads((cdk_out / artifact["additionalMetadataFile"]).read_text()))
        found += [str(entry["data"]) for entries in metadata.values() for entry in entries
                  if entry["type"] == "aws:cdk:warning"]
    return found
