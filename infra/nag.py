"""cdk-nag acknowledgements: every one names the rule (and finding) it accepts and says why."""

from __future__ import annotations

import re

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
