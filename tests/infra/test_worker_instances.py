"""EC2 launch type (issue 14 item 10): the worker instances' launch template keeps tasks off the instance
metadata service: the ECS agent's ECS_AWSVPC_BLOCK_IMDS, IMDSv2 only with a hop limit of 1. Fargate needs
none (tasks there have no instance metadata)."""

import copy
import json

import pytest

from rdsbackup_local.synth import synthesize
from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.infra.conftest import MULTI_ACCOUNT_CONFIG, PROD_A, flatten, resources_of


@pytest.fixture(scope="module")
def ec2_templates(tmp_path_factory) -> dict[str, dict]:
    config = copy.deepcopy(MULTI_ACCOUNT_CONFIG)
    config["policies"][0]["image_backup"]["worker"] = {"launch_type": "EC2", "capacity_provider": "workers-asg"}
    out, _ = synthesize(config, tmp_path_factory.mktemp("ec2") / "cdk.out", account=CONTROL_ACCOUNT, region=REGION)
    return {path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in out.glob("*.template.json")}


def test_ec2_worker_instances_block_instance_metadata_for_tasks(ec2_templates):
    (access,) = [t for name, t in ec2_templates.items() if PROD_A in name]
    (template,) = resources_of(access, "AWS::EC2::LaunchTemplate").values()
    data = template["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                       "HttpPutResponseHopLimit": 1}
    user_data = flatten(data["UserData"]["Fn::Base64"])
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data and "ECS_CLUSTER=rdsbackup-workers" in user_data
    assert "IamInstanceProfile" in data and "ecs/optimized-ami" in data["ImageId"]


def test_fargate_only_accounts_get_no_instance_template(templates, multi_templates):
    for template in [*templates.values(), *multi_templates.values()]:
        assert not resources_of(template, "AWS::EC2::LaunchTemplate")
