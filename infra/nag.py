"""cdk-nag acknowledgements: every one names the rule (and finding) it accepts and says why."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept a cdk-nag finding on `scope` and its children.

    `rule` is a rule id (`AwsSolutions-L1`) or one granular finding (`AwsSolutions-IAM5[Resource::*]`).
    """
    # cdk-nag names a finding by the rendered ARN, with pseudo parameters shown as <AWS::...>
    rule = _PSEUDO_TOKEN.sub(r"<AWS::\1>", rule)
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


_PSEUDO_TOKEN = re.compile(r"\$\{Token\[AWS\.(\w+)\.\d+\]\}")


ACKNOWLEDGED_FILE = Path(__file__).resolve().parents[1] / "security" / "acknowledged.json"
COMPLIANCE_PACKS = ("HIPAA.Security", "NIST.800.53.R5")


def add_compliance_packs(app: IConstruct) -> None:
    """HIPAA and NIST 800-53 R5 checks (`make security`), with the findings security/acknowledged.json
    accepts, each with its reason (one place for every tool)."""
    from cdk_nag import HIPAASecurityChecks, NIST80053R5Checks

    Validations.of(app).add_plugins(HIPAASecurityChecks(verbose=True), NIST80053R5Checks(verbose=True))
    for rule, reason in json.loads(ACKNOWLEDGED_FILE.read_text())["cdk-nag"].items():
        for pack in COMPLIANCE_PACKS:
            Validations.of(app).acknowledge(Acknowledgment(id=f"{pack}::{pack}-{rule}", reason=reason))
