"""The policies ship in the code package: read from LAMBDA_TASK_ROOT, checked against the deployed SHA-256,
deploy-time values put back from the environment."""

from __future__ import annotations

import json

import pytest
from rdsbackup_lambdas.config import PoliciesConfig
from rdsbackup_lambdas.errors import ConfigurationError

from infra.policies_bundle import POLICIES_FILE, bundle_policies

KEY_TOKEN = "${Token[TOKEN.1234]}"


def deploy(tmp_path, monkeypatch, policies: dict) -> None:
    """What deploy does: the file in the package, its hash and the resolved tokens in the environment."""
    bundle = bundle_policies(policies)
    (tmp_path / POLICIES_FILE).write_text(bundle.text)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    for name, value in bundle.environment.items():
        # CloudFormation resolves the token to the key's ARN
        monkeypatch.setenv(name, "arn:aws:kms:us-east-1:123456789012:key/abc" if value == KEY_TOKEN else value)
    monkeypatch.delenv("POLICIES_JSON", raising=False)


def test_policies_are_read_from_the_package_with_deploy_time_values(tmp_path, monkeypatch):
    deploy(tmp_path, monkeypatch, {"demo": {"image_backup": {"repository_kms_key_arn": KEY_TOKEN}}})
    assert "TOKEN" not in (tmp_path / POLICIES_FILE).read_text()
    policies = PoliciesConfig.from_env().policies
    key = "arn:aws:kms:us-east-1:123456789012:key/abc"
    assert policies == {"demo": {"image_backup": {"repository_kms_key_arn": key}}}


def test_a_package_changed_outside_a_deploy_is_refused(tmp_path, monkeypatch):
    deploy(tmp_path, monkeypatch, {"demo": {"snapshot_retention": 7}})
    (tmp_path / POLICIES_FILE).write_text(json.dumps({"demo": {"snapshot_retention": 1}}))
    with pytest.raises(ConfigurationError, match="does not match the SHA-256 deployed"):
        PoliciesConfig.from_env()


def test_policies_far_beyond_the_old_8000_byte_cap(tmp_path, monkeypatch):
    policies = {f"policy-{n:03d}": {"selection": {"resources": [f"db-{n:03d}-{i:02d}" for i in range(10)]}}
                for n in range(100)}
    deploy(tmp_path, monkeypatch, policies)
    assert (tmp_path / POLICIES_FILE).stat().st_size > 2 * 8000
    assert PoliciesConfig.from_env().policies == policies
