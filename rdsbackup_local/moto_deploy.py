"""Deploy a synthesized cdk.out into moto, as `cdk deploy --all` would into AWS.

moto's CloudFormation creates most resources of our templates. Where it falls short, this module
finishes the job through the services' own APIs, from the same templates:
- the state machine CloudFormation makes lives in moto's non-executing backend, so it is created
  again through the Step Functions API, from its definition with every reference resolved;
- `AWS::Scheduler::Schedule` is not supported by moto's CloudFormation: created through the
  Scheduler API;
- moto's CloudFormation crashes on tags of an `AWS::KMS::Key` (it expects TagKey/TagValue) and of an
  `AWS::SSM::Parameter` (a map in CloudFormation, a list to moto), so those tags are left out here.
Assets are uploaded to the bootstrap bucket that `cdk bootstrap` would have made.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

SessionFactory = Callable[[str], boto3.Session]
_UNKNOWN = ("unknown-account", "unknown-region")


@dataclass
class DeployedStack:
    name: str
    account: str
    region: str
    outputs: dict[str, str]
    physical_ids: dict[str, str]
    template: dict[str, Any]


@dataclass
class DeployedApp:
    stacks: dict[str, DeployedStack] = field(default_factory=dict)
    state_machine_arns: dict[str, str] = field(default_factory=dict)
    schedule_names: list[str] = field(default_factory=list)

    @property
    def control(self) -> DeployedStack:
        (control,) = [stack for name, stack in self.stacks.items() if _is_control(name)]
        return control

    @property
    def state_machine_arn(self) -> str:
        """The backup state machine."""
        return self.workflow_arn("Backup")

    def workflow_arn(self, workflow: str) -> str:
        """The state machine of a workflow ("Backup", "Restore", ...): the control stack's
        `<workflow>StateMachineArn` output."""
        outputs = self.control.outputs
        key = f"{workflow}StateMachineArn"
        if key not in outputs:
            known = sorted(name.removesuffix("StateMachineArn") for name in outputs if name.endswith("StateMachineArn"))
            raise KeyError(f"no {workflow!r} workflow deployed; the control stack has {known}")
        return outputs[key]


def _is_control(stack_name: str) -> bool:
    """`RdsBackupControl`, or `<prefix>-RdsBackupControl` (infra.topology.Names.control_stack)."""
    return stack_name.endswith("RdsBackupControl")


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [name for name in dirs if name != "__pycache__"]
            for name in files:
                path = Path(root) / name
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def _upload_assets(cdk_out: Path, assets_file: Path, session: boto3.Session, region: str) -> None:
    s3 = session.client("s3", region_name=region)
    manifest = json.loads(assets_file.read_text())
    for asset in manifest.get("files", {}).values():
        source = Path(asset["source"]["path"])
        source = source if source.is_absolute() else cdk_out / source
        body = _zip_folder(source) if asset["source"].get("packaging") == "zip" else source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"].replace("${AWS::Region}", region)
            bucket = bucket.replace("${AWS::AccountId}", session.client("sts").get_caller_identity()["Account"])
            try:
                if region == "us-east-1":
                    s3.create_bucket(Bucket=bucket)
                else:
                    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
            except s3.exceptions.BucketAlreadyOwnedByYou:
                pass
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)


def _for_moto(template: dict[str, Any]) -> dict[str, Any]:
    template = json.loads(json.dumps(template))
    template.pop("Rules", None)
    template.get("Parameters", {}).pop("BootstrapVersion", None)
    for resource in template.get("Resources", {}).values():
        if resource["Type"] in ("AWS::KMS::Key", "AWS::SSM::Parameter"):
            resource.get("Properties", {}).pop("Tags", None)
    return template


class _Resolver:
    """Resolves the intrinsic functions CDK puts into a state machine definition and a schedule."""

    def __init__(self, stack: DeployedStack, session: boto3.Session):
        self.stack, self.session = stack, session
        self._arns: dict[str, str] = {}

    def arn(self, logical_id: str) -> str:
        if logical_id not in self._arns:
            resource = self.stack.template["Resources"][logical_id]
            physical = self.stack.physical_ids[logical_id]
            kind = resource["Type"]
            if kind == "AWS::Lambda::Function":
                client = self.session.client("lambda", region_name=self.stack.region)
                self._arns[logical_id] = client.get_function(FunctionName=physical)["Configuration"]["FunctionArn"]
            elif kind == "AWS::IAM::Role":
                client = self.session.client("iam")
                self._arns[logical_id] = client.get_role(RoleName=physical)["Role"]["Arn"]
            elif kind == "AWS::Logs::LogGroup":
                self._arns[logical_id] = (f"arn:aws:logs:{self.stack.region}:{self.stack.account}:"
                                          f"log-group:{physical}:*")
            else:  # topics, state machines and keys report their ARN (or id) as physical id
                self._arns[logical_id] = physical
        return self._arns[logical_id]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self.resolve(part)) for part in parts)
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            if attribute == "Arn":
                return self.arn(logical_id)
            raise ValueError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute}")
        if "Ref" in value:
            ref = value["Ref"]
            pseudo = {"AWS::Partition": "aws", "AWS::Region": self.stack.region,
                      "AWS::AccountId": self.stack.account, "AWS::URLSuffix": "amazonaws.com"}
            return pseudo.get(ref) or self.stack.physical_ids[ref]
        return {key: self.resolve(item) for key, item in value.items()}


def _recreate_state_machines(stack: DeployedStack, session: boto3.Session, app: DeployedApp) -> None:
    sfn = session.client("stepfunctions", region_name=stack.region)
    resolver = _Resolver(stack, session)
    for logical_id, resource in stack.template["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        properties = resource["Properties"]
        name = stack.physical_ids[logical_id].rsplit(":", 1)[-1]
        created = sfn.create_state_machine(
            name=name,
            definition=resolver.resolve(properties["DefinitionString"]),
            roleArn=resolver.resolve(properties["RoleArn"]),
            type=properties.get("StateMachineType", "STANDARD"),
        )
        app.state_machine_arns[logical_id] = created["stateMachineArn"]
        # outputs that name the machine CloudFormation made now name the one that executes
        cloudformation_arn = stack.physical_ids[logical_id]
        for key, value in stack.outputs.items():
            if value == cloudformation_arn:
                stack.outputs[key] = created["stateMachineArn"]


def _create_schedules(stack: DeployedStack, session: boto3.Session, app: DeployedApp) -> None:
    scheduler = session.client("scheduler", region_name=stack.region)
    resolver = _Resolver(stack, session)
    for resource in stack.template["Resources"].values():
        if resource["Type"] == "AWS::Scheduler::ScheduleGroup":
            scheduler.create_schedule_group(Name=resource["Properties"]["Name"])
    for resource in stack.template["Resources"].values():
        if resource["Type"] != "AWS::Scheduler::Schedule":
            continue
        properties = resolver.resolve(resource["Properties"])
        target = properties["Target"]
        scheduler.create_schedule(
            Name=properties["Name"], GroupName=properties.get("GroupName", "default"),
            Description=properties.get("Description", ""),
            ScheduleExpression=properties["ScheduleExpression"],
            ScheduleExpressionTimezone=properties.get("ScheduleExpressionTimezone", "UTC"),
            FlexibleTimeWindow={"Mode": properties["FlexibleTimeWindow"]["Mode"]},
            State=properties.get("State", "ENABLED"),
            Target={"Arn": target["Arn"], "RoleArn": target["RoleArn"], "Input": target.get("Input", "{}"),
                    "RetryPolicy": {"MaximumEventAgeInSeconds": target["RetryPolicy"]["MaximumEventAgeInSeconds"],
                                    "MaximumRetryAttempts": target["RetryPolicy"]["MaximumRetryAttempts"]}},
        )
        app.schedule_names.append(properties["Name"])


def deploy(cdk_out: Path, *, session_for_account: SessionFactory, default_account: str,
           default_region: str) -> DeployedApp:
    """Deploy every stack of `cdk_out` into moto, in the account and region it names."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    app = DeployedApp()
    stacks = {name: artifact for name, artifact in manifest["artifacts"].items()
              if artifact["type"] == "aws:cloudformation:stack"}
    for name, artifact in sorted(stacks.items(), key=lambda item: not _is_control(item[0])):
        account, region = artifact["environment"].removeprefix("aws://").split("/")
        account = default_account if account == _UNKNOWN[0] else account
        region = default_region if region == _UNKNOWN[1] else region
        session = session_for_account(account)
        _upload_assets(cdk_out, cdk_out / f"{name}.assets.json", session, region)
        template = json.loads((cdk_out / artifact["properties"]["templateFile"]).read_text())
        cloudformation = session.client("cloudformation", region_name=region)
        cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(_for_moto(template)),
                                    Capabilities=["CAPABILITY_NAMED_IAM", "CAPABILITY_IAM"])
        described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if described["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack {name} did not deploy into moto: {described['StackStatus']} "
                               f"{described.get('StackStatusReason', '')}")
        resources = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
        stack = DeployedStack(
            name=name, account=account, region=region,
            outputs={output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])},
            physical_ids={r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources},
            template=template,
        )
        app.stacks[name] = stack
        _recreate_state_machines(stack, session, app)
        _create_schedules(stack, session, app)
    return app


def session_factory(default_account: str, endpoint_url: str | None = None) -> SessionFactory:
    """Sessions per moto account: the default account as is, others through STS assume-role."""

    def session_for(account: str) -> boto3.Session:
        base = boto3.Session()
        if account == default_account:
            return base
        sts = base.client("sts", endpoint_url=endpoint_url)
        credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/rdsbackup-deployer",
                                      RoleSessionName="rdsbackup-local-deploy")["Credentials"]
        return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                             aws_secret_access_key=credentials["SecretAccessKey"],
                             aws_session_token=credentials["SessionToken"])

    return session_for
