"""Several control deployments coexist: every stack and physically named resource derives from the
config's `deployment.name_prefix`, so two deployments with different prefixes share no name, and each
deployment's cross-account references (trust policies, the policies the Lambdas read) name its own roles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra.config import ConfigError, parse_config
from infra.topology import runtime_policies
from rdsbackup_local.synth import synthesize
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION
from tests.infra.conftest import flatten

BLUE = {**E2E_CONFIG, "deployment": {"name_prefix": "blue-dr"}}
# Name-like properties that name nothing outside their resource: an inline policy's name is unique per
# role, a metric's or an SNS display name are labels; an event bus policy's EventBusName is AWS's own
# "default" bus (a statement on it, named by its StatementId, is the deployment's).
NOT_PHYSICAL = {"PolicyName", "MetricName", "DisplayName", "EventBusName"}


def synthesized(config: dict, out: Path) -> tuple[dict[str, dict], object]:
    cdk_out, app = synthesize(config, out, account=CONTROL_ACCOUNT, region=REGION)
    templates = {path.name.removesuffix(".template.json"): json.loads(path.read_text())
                 for path in cdk_out.glob("*.template.json")}
    return templates, app


@pytest.fixture(scope="module")
def blue(tmp_path_factory):
    return synthesized(BLUE, tmp_path_factory.mktemp("blue") / "cdk.out")


def physical_names(templates: dict[str, dict]) -> dict[str, str]:
    """Every literal physical name in the templates (name -> where), names CloudFormation generates excluded."""
    names = {}
    for stack, template in templates.items():
        names[stack] = f"stack {stack}"
        for logical, resource in template["Resources"].items():
            for key, value in (resource.get("Properties") or {}).items():
                if not (key.endswith("Name") or key == "Family") or key in NOT_PHYSICAL:
                    continue
                text = flatten(value)
                # a reference to another resource of the stack resolves to a name CloudFormation generated
                # from the stack's name; pseudo parameters (region, account) are the same in both apps
                if re.search(r"<(?!AWS::)", text):
                    continue
                names[text] = f"{stack}/{logical} {resource['Type']}.{key}"
    return names


def role_names(templates: dict[str, dict]) -> set[str]:
    return {resource["Properties"]["RoleName"] for template in templates.values()
            for resource in template["Resources"].values()
            if resource["Type"] == "AWS::IAM::Role" and isinstance(resource["Properties"].get("RoleName"), str)}


def test_two_prefixes_share_no_physical_name(templates, blue):
    default, prefixed = physical_names(templates), physical_names(blue[0])
    kinds = {where.split(" ", 1)[1].split(".")[0] for where in prefixed.values() if " " in where}
    # the walk saw every kind of named resource the app makes
    assert {"AWS::IAM::Role", "AWS::S3::Bucket", "AWS::KMS::Alias", "AWS::ECS::Cluster", "AWS::ECS::TaskDefinition",
            "AWS::Scheduler::Schedule", "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"} <= kinds
    shared = {name: (default[name], prefixed[name]) for name in set(default) & set(prefixed)}
    assert not shared, shared
    assert all(name.startswith(("blue-dr", "alias/blue-dr")) for name in prefixed), sorted(prefixed)


def test_the_default_prefix_keeps_todays_names(templates):
    names = physical_names(templates)
    for name in ("RdsBackupControl", f"RdsBackupAccess-{CONTROL_ACCOUNT}-eu-west-1", "rdsbackup-read-us-east-1",
                 "rdsbackup-step-create-snapshot-us-east-1", "alias/rdsbackup-control", "alias/rdsbackup-staging",
                 "rdsbackup-workers", "rdsbackup-worker", "rdsbackup-maintenance-worker", "rdsbackup-nightly",
                 f"rdsbackup-main-{CONTROL_ACCOUNT}-{REGION}", "rdsbackup-rpo-nightly", "rdsbackup"):
        assert name in names, name


def test_trust_policies_name_the_step_roles_of_their_own_deployment(blue):
    templates, _ = blue
    own = role_names(templates)
    trusted = set()
    for template in templates.values():
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            for statement in resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
                arns = statement.get("Condition", {}).get("ArnEquals", {}).get("aws:PrincipalArn", [])
                trusted.update(arn.rsplit("/", 1)[1] for arn in ([arns] if isinstance(arns, str) else arns))
    assert trusted and trusted <= own, sorted(trusted - own)
    assert all(name.startswith("blue-dr-step-") for name in trusted)


def test_the_policies_the_lambdas_read_name_this_deployments_roles_keys_and_clusters(blue):
    templates, app = blue
    config = parse_config(BLUE, default_account=CONTROL_ACCOUNT, default_region=REGION)
    policies = json.dumps(runtime_policies(config, app.topology))
    roles = set(re.findall(r"arn:aws:iam::\d{12}:role/([\w+=,.@-]+)", policies))
    assert roles and roles <= role_names(templates), sorted(roles - role_names(templates))
    aliases = set(re.findall(r"arn:aws:kms:[a-z0-9-]+:\d{12}:(alias/[\w/-]+)", policies))
    assert aliases == {"alias/blue-dr-staging", "alias/blue-dr-replica"}
    names = physical_names(templates)
    for cluster_or_family in re.findall(r'"(?:cluster|task_family)": "([^"]+)"', policies):
        assert cluster_or_family in names, cluster_or_family
    for bucket in re.findall(r"s3://([^/]+)/", policies):
        assert bucket in names, bucket


def _throwaway_prefixes(templates: dict[str, dict]) -> dict[str, str]:
    """handler -> THROWAWAY_PREFIX of each Lambda that is given one."""
    return {function["Properties"]["Handler"].split(".")[-2]: variables["THROWAWAY_PREFIX"]
            for template in templates.values() for function in template["Resources"].values()
            if function["Type"] == "AWS::Lambda::Function"
            and "THROWAWAY_PREFIX" in (variables := function["Properties"].get("Environment", {}).get("Variables", {}))}


@pytest.mark.parametrize("deployment", ["default", "blue-dr"])
def test_restore_test_throwaways_are_named_swept_and_deletable_after_the_deployments_prefix(templates, blue,
                                                                                         deployment):
    """The plan names throwaways and the sweeper finds them by THROWAWAY_PREFIX; the launch role (the sweeper's)
    may delete only databases so named: all three follow `deployment.name_prefix`, so neither deployment's
    sweeper can delete the other's throwaways."""
    from tests.support.policy_evaluator import allowed, load
    from tests.support.security_table import places

    synthesized_templates = templates if deployment == "default" else blue[0]
    prefix, other = ("rdsbackup", "blue-dr") if deployment == "default" else ("blue-dr", "rdsbackup")
    assert _throwaway_prefixes(synthesized_templates) == {"plan_restore_test": f"{prefix}-test-",
                                                          "sweep_orphans": f"{prefix}-test-"}
    model = load(synthesized_templates, places(synthesized_templates))
    launch = f"arn:aws:iam::{CONTROL_ACCOUNT}:role/{prefix}-launch-{REGION}"
    here = f"arn:aws:rds:{REGION}:{CONTROL_ACCOUNT}"
    tagged = {"aws:ResourceTag/rdsbackup:temporary": "true",
              "aws:ResourceTag/rdsbackup:restore-test": f"{here}:db:shop-db"}
    for action, kind in (("rds:DeleteDBInstance", "db"), ("rds:DeleteDBCluster", "cluster")):
        assert allowed(model, launch, action, f"{here}:{kind}:{prefix}-test-0123456789abcdef", tagged)
        assert not allowed(model, launch, action, f"{here}:{kind}:{other}-test-0123456789abcdef", tagged)


@pytest.mark.parametrize("prefix", ["", "Blue", "-blue", "blue-", "a-very-long-prefix", "blue_dr", "blue--dr"])
def test_a_bad_prefix_is_refused_naming_the_field(prefix):
    with pytest.raises(ConfigError, match=r'field "deployment\.name_prefix"'):
        parse_config({**E2E_CONFIG, "deployment": {"name_prefix": prefix}}, default_account=CONTROL_ACCOUNT,
                     default_region=REGION)
