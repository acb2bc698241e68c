"""cfn-lint and cdk-nag on the synthesized templates; the CDK CLI from npm synthesizes the app."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

from infra.app_builder import build_app
from infra.config import parse_config
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION

ROOT = Path(__file__).resolve().parents[2]


def test_cfn_lint_reports_no_errors(cdk_out):
    templates = sorted(str(path) for path in cdk_out.glob("*.template.json"))
    # W3005 (a DependsOn that a GetAtt already implies) is how CDK orders role policies: not ours to change.
    result = subprocess.run(["cfn-lint", "--format", "parseable", "--ignore-checks=W3005", "--", *templates],
                            capture_output=True, text=True)
    errors = [line for line in result.stdout.splitlines() if ":E" in line or ":W" in line]
    assert errors == [], "\n".join(errors)


def test_cdk_nag_ran_and_every_acknowledgement_has_a_reason(cdk_out):
    report = json.loads((cdk_out / "validation-report.json").read_text())
    assert any("AwsSolutions" in json.dumps(plugin) for plugin in report["pluginReports"])
    for plugin in report["pluginReports"]:
        assert plugin.get("summary", {}).get("status", "success") == "success", plugin.get("summary")
    for path in cdk_out.glob("*.template.json"):
        text = path.read_text()
        for acknowledged in json.loads(text).get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert acknowledged.get("reason"), acknowledged


def test_cdk_nag_finding_fails_synth(tmp_path):
    """An unacknowledged finding (an unencrypted bucket without access logs) stops synth."""
    os.environ.setdefault("CDK_DEFAULT_ACCOUNT", CONTROL_ACCOUNT)
    app = App(context={"rdsbackup:bundle": "false"}, outdir=str(tmp_path))
    backup_app = build_app(app, parse_config(E2E_CONFIG, default_account=CONTROL_ACCOUNT, default_region=REGION))
    s3.Bucket(backup_app.control, "CarelessBucket")
    with pytest.raises(Exception, match="AwsSolutions-S1"):
        app.synth()


def test_a_single_stack_without_findings_is_unchanged(tmp_path):
    app = App(outdir=str(tmp_path))
    Stack(app, "Empty")
    app.synth()


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node's npx (CI installs the CDK CLI)")
def test_npx_cdk_synth_with_the_shipped_config(tmp_path):
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    result = subprocess.run(["npx", "--no-install", "cdk", "synth", "--quiet", "-o", str(tmp_path / "out"),
                             "-c", "rdsbackup:bundle=false"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "RdsBackupControl.template.json").exists()


def test_bad_config_stops_cdk_app_with_named_field(tmp_path):
    bad = {"policies": [{"name": "demo", "schedule": {"expression": "cron(0 3 * * *)"},
                         "selection": {"tags": {"a": "b"}}, "snapshot_retention": 3}]}
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"rdsbackup": bad}), "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run(["python", "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'policy "demo": field "schedule.expression"' in result.stderr
