"""A small IAM evaluator over synthesized templates: who can do which dangerous thing to what.

moto does not enforce IAM, so the trust model is proven on the policy documents themselves. This
evaluates the documents the way IAM does for the cases the templates use: an explicit Deny wins;
within an account an Allow in the identity policy or the resource policy suffices; across accounts
both must allow; a role is assumed only when the caller's identity allows `sts:AssumeRole` and the
role's trust policy allows the caller. Condition operators: the String*/Arn*/Bool/Null families with
`IfExists`, `ForAllValues:`/`ForAnyValue:`; `NotResource`. Not modelled (and not used by our templates): NotAction,
NotPrincipal, permission boundaries, SCPs, session policies, policy variables.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from tests.infra.conftest import as_list, flatten, resources_of


def _resolve(text: str, account: str, region: str, refs: dict[str, str]) -> str:
    text = text.replace("<AWS::Partition>", "aws").replace("<AWS::Region>", region).replace("<AWS::AccountId>", account)
    return re.sub(r"<([A-Za-z0-9]+)(?:\.Arn)?>", lambda m: refs.get(m.group(1), m.group(0)), text)


def _values(value: Any, resolve) -> list[str]:
    return [resolve(flatten(v)) for v in as_list(value)]


@dataclass
class Statement:
    effect: str
    actions: list[str]
    resources: list[str]
    principals: list[str] | None  # resource policies: "*" or ARNs ("arn:aws:iam::ACCOUNT:root", role ARNs)
    services: list[str]
    conditions: dict[str, dict[str, list[str]]]
    not_resources: list[str] | None = None  # a statement with NotResource applies to everything else

    def matches_action(self, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in self.actions)

    def matches_resource(self, resource: str) -> bool:
        if self.not_resources is not None:
            return not any(fnmatch.fnmatchcase(resource, pattern) for pattern in self.not_resources)
        return any(pattern == "*" or fnmatch.fnmatchcase(resource, pattern) for pattern in self.resources)

    def matches_principal(self, principal: str) -> bool:
        if self.principals is None:
            return True
        account = principal.split(":")[4]
        return any(p in ("*", principal, account, f"arn:aws:iam::{account}:root") for p in self.principals)

    def names_principal_itself(self, principal: str) -> bool:
        """A grant to the principal itself (or to anyone), not to its account: that one only lets the
        account's IAM policies grant it (delegation)."""
        return self.principals is not None and any(p in ("*", principal) for p in self.principals)


def _condition_holds(operator: str, key: str, expected: list[str], context: dict[str, Any]) -> bool:
    quantifier = ""
    if ":" in operator and operator.split(":")[0] in ("ForAllValues", "ForAnyValue"):
        quantifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    present = key in context
    if operator == "Null":
        return (not present) == (expected[0].lower() == "true")
    if not present and not quantifier:
        return if_exists or operator.startswith(("StringNot", "ArnNot"))
    actual = [str(v) for v in as_list(context.get(key, []))]

    def one(value: str) -> bool:
        if operator in ("StringEquals", "ArnEquals"):
            return value in expected
        if operator in ("StringLike", "ArnLike"):
            return any(fnmatch.fnmatchcase(value, pattern) for pattern in expected)
        if operator in ("StringNotEquals", "ArnNotEquals"):
            return value not in expected
        if operator in ("StringNotLike", "ArnNotLike"):
            return not any(fnmatch.fnmatchcase(value, pattern) for pattern in expected)
        if operator == "Bool":
            return value.lower() == expected[0].lower()
        raise ValueError(f"condition operator {operator} is not modelled")

    if quantifier == "ForAllValues":
        return all(one(v) for v in actual)
    if quantifier == "ForAnyValue":
        return any(one(v) for v in actual)
    return any(one(v) for v in actual)


def _conditions_hold(statement: Statement, context: dict[str, Any]) -> bool:
    return all(_condition_holds(operator, key, values, context)
               for operator, keys in statement.conditions.items() for key, values in keys.items())


def _statements(document: dict, resolve, *, resource_policy: bool) -> list[Statement]:
    found = []
    for raw in as_list(document.get("Statement", [])):
        principals = services = None
        if resource_policy:
            principal = raw.get("Principal", {})
            if principal == "*":
                principals, services = ["*"], []
            else:
                principals = _values(principal.get("AWS", []), resolve)
                services = _values(principal.get("Service", []), resolve)
        conditions = {op: {k: _values(v, resolve) for k, v in keys.items()}
                      for op, keys in raw.get("Condition", {}).items()}
        not_resources = _values(raw["NotResource"], resolve) if "NotResource" in raw else None
        resources = _values(raw.get("Resource", [] if not_resources is not None else "*"), resolve)
        found.append(Statement(raw["Effect"], _values(raw["Action"], resolve), resources, principals, services or [],
                               conditions, not_resources))
    return found


@dataclass
class Account:
    """Everything the templates deploy: roles with identity and trust policies, resource policies."""

    identity: dict[str, list[Statement]] = field(default_factory=dict)   # role ARN -> statements
    trust: dict[str, list[Statement]] = field(default_factory=dict)      # role ARN -> trust statements
    resource_policies: dict[str, list[Statement]] = field(default_factory=dict)  # bucket/key ARN -> statements
    bucket_accounts: dict[str, str] = field(default_factory=dict)  # bucket ARN -> owning account
    organization_id: str | None = None  # every principal's aws:PrincipalOrgID

    def context(self, principal: str, extra: dict[str, Any] | None) -> dict[str, Any]:
        base = {"aws:PrincipalArn": principal, "aws:PrincipalAccount": _account_of(principal)}
        if self.organization_id:
            base["aws:PrincipalOrgID"] = self.organization_id
        return {**base, **(extra or {})}


def load(templates: dict[str, dict], places: dict[str, tuple[str, str]]) -> Account:
    """`places`: stack name -> (account, region)."""
    model = Account()
    for stack, template in templates.items():
        account, region = places[stack]
        refs: dict[str, str] = {}
        for logical, role in resources_of(template, "AWS::IAM::Role").items():
            name = flatten(role["Properties"].get("RoleName", logical))
            refs[logical] = f"arn:aws:iam::{account}:role/{name}"
        for logical, bucket in resources_of(template, "AWS::S3::Bucket").items():
            refs[logical] = f"arn:aws:s3:::{flatten(bucket['Properties'].get('BucketName', logical.lower()))}"
            model.bucket_accounts[refs[logical]] = account
        for logical in resources_of(template, "AWS::KMS::Key"):
            refs[logical] = f"arn:aws:kms:{region}:{account}:key/{logical}"

        def resolve(text: str, account=account, region=region, refs=refs) -> str:
            return _resolve(text, account, region, refs)

        for logical, role in resources_of(template, "AWS::IAM::Role").items():
            arn = refs[logical]
            model.identity.setdefault(arn, [])
            model.trust[arn] = _statements(role["Properties"]["AssumeRolePolicyDocument"], resolve,
                                           resource_policy=True)
        for policy in resources_of(template, "AWS::IAM::Policy").values():
            statements = _statements(policy["Properties"]["PolicyDocument"], resolve, resource_policy=False)
            for ref in policy["Properties"]["Roles"]:
                model.identity[refs[ref["Ref"]]] += statements
        for policy in resources_of(template, "AWS::S3::BucketPolicy").values():
            bucket = resolve(flatten(policy["Properties"]["Bucket"]))
            bucket = bucket if bucket.startswith("arn:") else f"arn:aws:s3:::{bucket}"
            model.resource_policies[bucket] = _statements(policy["Properties"]["PolicyDocument"], resolve,
                                                          resource_policy=True)
        for logical, key in resources_of(template, "AWS::KMS::Key").items():
            model.resource_policies[refs[logical]] = _statements(key["Properties"]["KeyPolicy"], resolve,
                                                                 resource_policy=True)
    return model


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def _resource_policy_for(model: Account, resource: str) -> tuple[str | None, list[Statement]]:
    if resource.startswith("arn:aws:s3:::"):
        bucket = "arn:aws:s3:::" + resource.removeprefix("arn:aws:s3:::").split("/", 1)[0]
        return bucket, model.resource_policies.get(bucket, [])
    if resource in model.resource_policies:
        return resource, model.resource_policies[resource]
    return None, []


def allowed(model: Account, principal: str, action: str, resource: str, context: dict[str, Any] | None = None,
            *, resource_account: str | None = None) -> bool:
    """Whether `principal` (a role ARN in the model) may do `action` on `resource`."""
    context = model.context(principal, context)
    identity = [s for s in model.identity.get(principal, [])
                if s.matches_action(action) and s.matches_resource(resource) and _conditions_hold(s, context)]
    _, policy = _resource_policy_for(model, resource)
    # in a key policy, "*" means the key itself
    on_resource = [s for s in policy if s.matches_action(action)
                   and (s.matches_resource(resource) or s.resources == ["*"])
                   and s.matches_principal(principal) and _conditions_hold(s, context)]
    if any(s.effect == "Deny" for s in identity + on_resource):
        return False
    identity_allows = any(s.effect == "Allow" for s in identity)
    resource_allows = any(s.effect == "Allow" for s in on_resource)
    resource_grants_itself = any(s.effect == "Allow" and s.names_principal_itself(principal) for s in on_resource)
    owner = resource_account or _account_of(resource)
    if resource.startswith("arn:aws:s3:::"):
        owner = model.bucket_accounts.get(_resource_policy_for(model, resource)[0] or "", owner)
    if owner and owner != _account_of(principal):
        return identity_allows and resource_allows
    # same account: an identity policy allows where the resource policy trusts the account (KMS: the key
    # policy must; S3: the bucket policy need not); a resource policy alone only when it names the principal
    if resource.startswith("arn:aws:kms:") and not resource_allows:
        return False
    return identity_allows or resource_grants_itself


def can_assume(model: Account, principal: str, role: str, context: dict[str, Any] | None = None) -> bool:
    """`principal` may call sts:AssumeRole on `role` (identity allows it and the trust policy trusts it)."""
    context = model.context(principal, context)
    identity = [s for s in model.identity.get(principal, [])
                if s.matches_action("sts:AssumeRole") and s.matches_resource(role) and _conditions_hold(s, context)]
    trusted = [s for s in model.trust.get(role, []) if s.matches_action("sts:AssumeRole")
               and s.matches_principal(principal) and _conditions_hold(s, context)]
    if any(s.effect == "Deny" for s in identity + trusted):
        return False
    return any(s.effect == "Allow" for s in identity) and any(s.effect == "Allow" for s in trusted)


def reach(model: Account, principal: str, action: str, resource: str, context: dict[str, Any] | None = None,
          *, resource_account: str | None = None) -> list[str]:
    """The roles through which `principal` reaches `action` on `resource`: itself, or a role it can assume
    (one hop, as the control plane does)."""
    via = []
    if allowed(model, principal, action, resource, context, resource_account=resource_account):
        via.append(principal)
    for role in model.trust:
        if role != principal and can_assume(model, principal, role, context) and \
                allowed(model, role, action, resource, context, resource_account=resource_account):
            via.append(role)
    return via


@dataclass(frozen=True)
class Probe:
    """One dangerous request: a column of the who-can-do-what table."""

    title: str
    action: str
    resource: str
    context: dict = field(default_factory=dict)


def table(model: Account, principals: dict[str, str], probes: list[Probe]) -> dict[str, dict[str, list[str]]]:
    """For each principal (label -> role ARN) and probe: the roles through which it gets there."""
    return {label: {probe.title: reach(model, arn, probe.action, probe.resource, probe.context) for probe in probes}
            for label, arn in principals.items()}


def markdown(rows: dict[str, dict[str, list[str]]], probes: list[Probe]) -> str:
    """The table as Markdown: "yes (via role)" where a principal reaches the request, "-" where not."""
    def cell(via: list[str], own: str) -> str:
        if not via:
            return "-"
        names = sorted({arn.rsplit("/", 1)[-1] for arn in via} - {own})
        return "**yes**" + (f" (via {', '.join(names)})" if names else "")

    lines = ["| who | " + " | ".join(p.title for p in probes) + " |",
             "|---|" + "---|" * len(probes)]
    for label, cells in rows.items():
        own = label.split(" ", 1)[0]
        lines.append(f"| {label} | " + " | ".join(cell(cells[p.title], own) for p in probes) + " |")
    return "\n".join(lines)
