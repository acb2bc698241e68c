"""The who-can-do-what table of docs/security.md, computed from the multi-account templates.

`python -m tests.support.security_table` synthesizes the reviewed multi-account config and prints the
table; tests/infra/test_who_can_do_what.py asserts it.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.infra.conftest import MULTI_ACCOUNT_CONFIG, PROD_A, PROD_B, VAULT
from tests.support.policy_evaluator import Account, Probe, Statement, load, markdown, table

BUCKET = f"arn:aws:s3:::rdsbackup-vault-{CONTROL_ACCOUNT}-{REGION}"
MANAGED = {"rds:snapshot-tag/rdsbackup:managed": "true"}
# A non-admin in the control account who may call sts:AssumeRole on anything (and nothing else).
CONTROL_USER = f"arn:aws:iam::{CONTROL_ACCOUNT}:role/developer"

PROBES = [
    Probe("delete a managed snapshot", "rds:DeleteDBSnapshot",
          f"arn:aws:rds:{REGION}:{PROD_A}:snapshot:rdsbackup-orders-orders-db-s1", MANAGED),
    Probe("delete the user's own snapshot", "rds:DeleteDBSnapshot",
          f"arn:aws:rds:{REGION}:{PROD_A}:snapshot:before-upgrade"),
    Probe("delete a vault replica", "rds:DeleteDBSnapshot",
          f"arn:aws:rds:{REGION}:{VAULT}:snapshot:rdsbackup-orders-orders-db-s1", MANAGED),
    Probe("modify a DB", "rds:ModifyDBInstance", f"arn:aws:rds:{REGION}:{PROD_A}:db:orders-db"),
    # a database of the same account no policy selects (not named, not tagged backup=billing)
    Probe("modify a DB no policy selects", "rds:ModifyDBInstance", f"arn:aws:rds:{REGION}:{PROD_A}:db:payroll-db",
          {"aws:ResourceTag/team": "payroll"}),
    # the restore tag makes a database the restore role's to rename and delete
    Probe("mark a DB no policy selects as restored", "rds:AddTagsToResource",
          f"arn:aws:rds:{REGION}:{PROD_A}:db:payroll-db",
          {"aws:ResourceTag/team": "payroll", "aws:RequestTag/rdsbackup:restore": "restore-x",
           "aws:TagKeys": ["rdsbackup:restore"]}),
    Probe("share a snapshot", "rds:ModifyDBSnapshotAttribute",
          f"arn:aws:rds:{REGION}:{PROD_A}:snapshot:rdsbackup-orders-orders-db-s1", MANAGED),
    Probe(f"read {PROD_B}'s repository prefix", "s3:GetObject", f"{BUCKET}/billing/keys/k1"),
    Probe("delete repository objects", "s3:DeleteObject", f"{BUCKET}/orders/data/p1"),
    # a put without If-None-Match: the one that replaces an existing object (S3 refuses the conditional one)
    Probe("overwrite a restore point", "s3:PutObject", f"{BUCKET}/orders/manifests/rp1",
          {"s3:ObjectCreationOperation": "true"}),
    Probe("change the repository bucket policy", "s3:PutBucketPolicy", BUCKET),
    Probe("decrypt tag metadata", "kms:Decrypt", "TAG_KEY",
          {"kms:EncryptionContext:rdsbackup:snapshot": f"arn:aws:rds:{REGION}:{PROD_A}:snapshot:rdsbackup-o-s1"}),
    Probe("read another DB's secret", "secretsmanager:GetSecretValue",
          f"arn:aws:secretsmanager:{REGION}:{PROD_A}:secret:rds!db-0123-other",
          {"secretsmanager:ResourceTag/aws:rds:primaryDBInstanceArn": f"arn:aws:rds:{REGION}:{PROD_A}:db:other-db"}),
]


def places(templates: dict[str, dict]) -> dict[str, tuple[str, str]]:
    found = {}
    for name in templates:
        match = re.search(r"-(\d{12})-([a-z0-9-]+)$", name)
        found[name] = (match.group(1), match.group(2)) if match else (CONTROL_ACCOUNT, REGION)
    return found


def tag_key_arn(model: Account) -> str:
    """The key that protects tag metadata: the dedicated tag key when there is one, else the control key."""
    keys = [arn for arn in model.resource_policies if arn.startswith(f"arn:aws:kms:{REGION}:{CONTROL_ACCOUNT}:key/")]
    return next((k for k in keys if "TagKey" in k), next(k for k in keys if k.endswith("/Key961B73FD")))


def principals(model: Account) -> dict[str, str]:
    """Rows: every role the templates make, and a non-admin of the control account."""
    rows = {}
    for arn in sorted(model.identity):
        name = arn.rsplit("/", 1)[1]
        account = arn.split(":")[4]
        if "-break-glass" not in name and not name.startswith("developer"):
            rows[f"{name} ({'control' if account == CONTROL_ACCOUNT else account})"] = arn
    model.identity[CONTROL_USER] = [Statement("Allow", ["sts:AssumeRole"], ["*"], None, [], {})]
    rows["developer (control account, may call sts:AssumeRole on *)"] = CONTROL_USER
    return rows


def compute(templates: dict[str, dict]) -> tuple[dict, list[Probe]]:
    model = load(templates, places(templates))
    model.organization_id = MULTI_ACCOUNT_CONFIG["control"]["organization_id"]
    key = tag_key_arn(model)
    probes = [Probe(p.title, p.action, key if p.resource == "TAG_KEY" else p.resource, p.context) for p in PROBES]
    return table(model, principals(model), probes), probes


def main(out: str | None = None) -> None:
    if out is None:
        from rdsbackup_local.synth import synthesize

        out = str(synthesize(MULTI_ACCOUNT_CONFIG, Path(tempfile.mkdtemp()) / "cdk.out", account=CONTROL_ACCOUNT,
                             region=REGION)[0])
    templates = {path.name.removesuffix(".template.json"): json.loads(path.read_text())
                 for path in Path(out).glob("*.template.json")}
    rows, probes = compute(templates)
    # only rows that reach something, and the control-account user
    shown = {label: cells for label, cells in rows.items() if any(cells.values()) or "developer" in label}
    print(markdown(shown, probes))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
