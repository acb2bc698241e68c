"""`make security`: cfn-lint, cdk-nag (AwsSolutions + HIPAA + NIST 800-53 R5), checkov and parliament over
the synthesized templates of the shipped config and of the reviewed multi-account config.

Every finding that remains is acknowledged with its reason in security/acknowledged.json (cdk-nag's
AwsSolutions findings where they arise, with infra.nag.acknowledge). Exits non-zero on any other.
checkov and parliament run from their own virtualenv (.venv-security, pinned in
requirements-security.txt): their dependency pins conflict with the CDK's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script run from the checkout, like app.py

from infra.config import load_config  # noqa: E402
from rdsbackup_local.synth import synthesize  # noqa: E402
from tests.infra.conftest import MULTI_ACCOUNT_CONFIG, flatten, resources_of  # noqa: E402

OUT = ROOT / "build" / "security"
SECURITY_PYTHON = ROOT / ".venv-security" / "bin" / "python"
ACKNOWLEDGED = json.loads((ROOT / "security" / "acknowledged.json").read_text())
ACCOUNT, REGION = "123456789012", "us-east-1"


def _shipped_config() -> dict:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    config = load_config({k: context.get(k) for k in ("rdsbackup", "rdsbackup:config_file")}, base_dir=ROOT,
                         default_account=ACCOUNT, default_region=REGION)
    return config.model_dump(exclude_none=True)


def synth_all() -> dict[str, Path]:
    """Both configs, with the compliance packs: a finding not acknowledged fails synth."""
    outs = {}
    for name, config in (("shipped", _shipped_config()), ("multi-account", MULTI_ACCOUNT_CONFIG)):
        out, _ = synthesize(config, OUT / name, account=ACCOUNT, region=REGION,
                            context={"rdsbackup:compliance-packs": True})
        outs[name] = out
        print(f"cdk-nag (AwsSolutions, HIPAA.Security, NIST.800.53.R5): {name}: no unacknowledged finding")
    return outs


def cfn_lint(out: Path) -> list[str]:
    templates = sorted(str(p) for p in out.glob("*.template.json"))
    result = subprocess.run(["cfn-lint", "--format", "parseable", "--ignore-checks=W3005", "--", *templates],
                            capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if ":E" in line or ":W" in line]


def checkov(out: Path) -> list[str]:
    skip = ",".join(ACKNOWLEDGED["checkov"])
    result = subprocess.run([str(SECURITY_PYTHON), "-m", "checkov.main", "-d", str(out), "--framework",
                             "cloudformation", "--quiet", "--compact", "--output", "json", "--skip-check", skip],
                            capture_output=True, text=True)
    reports = json.loads(result.stdout or "[]")
    failures = []
    for report in reports if isinstance(reports, list) else [reports]:
        for check in report.get("results", {}).get("failed_checks", []):
            failures.append(f"{check['check_id']} {check['check_name']}: {check['file_path']} {check['resource']}")
    return failures


# What a reference to a resource renders as, so parliament sees a well-formed ARN of the right service.
_ARN_OF = {
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    "AWS::StepFunctions::StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "AWS::SSM::Parameter": "arn:aws:ssm:{region}:{account}:parameter/{name}",
    "AWS::ECS::TaskDefinition": "arn:aws:ecs:{region}:{account}:task-definition/{name}:1",
    "AWS::ECS::Cluster": "arn:aws:ecs:{region}:{account}:cluster/{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
}


def _policies(out: Path) -> list[dict]:
    """Every identity policy of the templates, intrinsic functions rendered as text."""
    found = []
    for path in sorted(out.glob("*.template.json")):
        template = json.loads(path.read_text())
        refs = {logical: _ARN_OF.get(resource["Type"], "arn:aws:cloudformation:{region}:{account}:x/{name}")
                .format(account=ACCOUNT, region=REGION, name=logical.lower())
                for logical, resource in template["Resources"].items()}
        for logical, policy in resources_of(template, "AWS::IAM::Policy").items():
            document = json.loads(_render(policy["Properties"]["PolicyDocument"], refs))
            found.append({"where": f"{path.name}:{logical}", "document": document})
    return found


def _render(value, refs: dict[str, str]) -> str:
    def walk(node):
        if isinstance(node, dict) and any(k in node for k in ("Fn::Join", "Fn::GetAtt", "Ref")):
            text = flatten(node).replace("<AWS::Partition>", "aws").replace("<AWS::Region>", REGION)
            text = text.replace("<AWS::AccountId>", ACCOUNT)
            return re.sub(r"<([A-Za-z0-9]+)(?:\.\w+)?>", lambda m: refs.get(m.group(1), m.group(0)), text)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return json.dumps(walk(value))


_PARLIAMENT = """
import json, sys
from parliament import analyze_policy_string
for policy in json.load(sys.stdin):
    for finding in analyze_policy_string(json.dumps(policy["document"])).findings:
        print(json.dumps({"where": policy["where"], "issue": finding.issue, "detail": str(finding.detail)[:300]}))
"""


def parliament(out: Path) -> list[str]:
    result = subprocess.run([str(SECURITY_PYTHON), "-c", _PARLIAMENT], input=json.dumps(_policies(out)),
                            capture_output=True, text=True, check=True)
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    accepted = ACKNOWLEDGED["parliament"]
    return [f"{f['issue']}: {f['where']}: {f['detail']}" for f in findings if f["issue"] not in accepted]


def main() -> int:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    problems = []
    for name, out in synth_all().items():
        for tool, check in (("cfn-lint", cfn_lint), ("checkov", checkov), ("parliament", parliament)):
            found = check(out)
            print(f"{tool}: {name}: {len(found)} unacknowledged finding(s)")
            problems += [f"{tool}: {name}: {line}" for line in found]
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
