"""cdk-nag acknowledgements: every one names the rule (and finding) it accepts and says why."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept a cdk-nag finding on `scope` and its children.

    `rule` is a rule id (`AwsSolutions-L1`) or one granular finding (`AwsSolutions-IAM5[Resource::*]`).
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))
