"""The restore workflow's archive retrieval steps: least privilege (they open the archive and ask S3 to
retrieve its packs, never read a pack) and a Lambda asset that carries the worker's repository code."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.infra.conftest import as_list, definition_of, flatten, resources_of, state_machine

ARCHIVE = "<RepositoriesRepositorycold"  # the archive repository's bucket (config: repositories.cold)
STEPS = ("RequestArchiveRetrieval", "CheckArchiveRetrieval")


def _statements(template: dict, step: str) -> list[dict]:
    roles = [logical for logical in resources_of(template, "AWS::IAM::Role") if logical.startswith(f"{step}Role")]
    assert len(roles) == 1, roles
    found = []
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        if any(ref["Ref"] == roles[0] for ref in policy["Properties"]["Roles"]):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_retrieval_steps_read_the_archive_index_and_manifests_and_retrieve_packs_only(control_template):
    for step in STEPS:
        s3 = [s for s in _statements(control_template, step)
              if any(a.startswith("s3:") for a in as_list(s["Action"]))]
        by_action: dict[str, list[str]] = {}
        for statement in s3:
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                by_action.setdefault(action, []).extend(flatten(r) for r in as_list(statement["Resource"]))
        assert sorted(by_action) == ["s3:GetObject", "s3:ListBucket", "s3:RestoreObject"], (step, by_action)
        reads = by_action["s3:GetObject"]
        assert all(r.startswith(ARCHIVE) for r in reads)
        # each archiving policy's archive (images; archtested, whose restore tests retrieve from it)
        assert sorted(r.split(".Arn>/", 1)[1] for r in reads) == [
            f"{policy}/{what}" for policy in ("archtested", "images") for what in ("config", "keys/*", "manifests/*")
        ], reads
        assert sorted(r.split(".Arn>/", 1)[1] for r in by_action["s3:RestoreObject"]) == ["archtested/data/*",
                                                                                          "images/data/*"]
        listings = [s["Condition"] for s in s3 if as_list(s["Action"]) == ["s3:ListBucket"]]
        assert sorted(listings, key=json.dumps) == [
            {"StringLike": {"s3:prefix": [f"{policy}/keys/*", f"{policy}/data/*"]}}
            for policy in ("archtested", "images")]
        # no other bucket, no write, no delete, no pack read
        assert not any("Put" in a or "Delete" in a for a in by_action)
        kms = [s for s in _statements(control_template, step) if "kms:Decrypt" in as_list(s["Action"])]
        assert kms and all(s.get("Condition") for s in kms), "the repository key only through S3 or for key unwrap"


def test_the_production_worker_reads_its_policys_archive_and_writes_only_its_locks_there(templates,
                                                                                         control_template):
    cold = "arn:aws:s3:::rdsbackup-cold-123456789012-us-east-1"
    access = templates["RdsBackupAccess"]
    (task_role,) = [logical for logical in resources_of(access, "AWS::IAM::Role") if "TaskRole" in logical]
    statements = [s for p in resources_of(access, "AWS::IAM::Policy").values()
                  if task_role in flatten(p["Properties"]["Roles"])
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    on_archive: dict[str, set[str]] = {}
    for statement in statements:
        for resource in as_list(statement["Resource"]):
            if flatten(resource).startswith(cold):
                for action in as_list(statement["Action"]):
                    on_archive.setdefault(action, set()).add(flatten(resource).removeprefix(cold))
    assert on_archive == {"s3:GetObject": {"/images/*", "/archtested/*"},
                          "s3:PutObject": {"/images/locks/*", "/archtested/locks/*"},
                          "s3:DeleteObject": {"/images/locks/*", "/archtested/locks/*"}, "s3:ListBucket": {""},
                          "s3:GetBucketLocation": {""}}, on_archive
    # the archive bucket's policy says the same for this account's worker role, named exactly
    (policy,) = [p for p in resources_of(control_template, "AWS::S3::BucketPolicy").values()
                 if "Repositorycold" in flatten(p["Properties"]["Bucket"])]
    allowed = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
               and "rdsbackup-worker-us-east-1" in flatten(s.get("Condition"))]
    granted: dict[str, set[str]] = {}
    for statement in allowed:
        for action in as_list(statement["Action"]):
            granted.setdefault(action, set()).update(flatten(r).split(".Arn>", 1)[-1]
                                                     for r in as_list(statement["Resource"]))
    assert granted == {"s3:GetObject": {"/images/*", "/archtested/*"},
                       "s3:PutObject": {"/images/locks/*", "/archtested/locks/*"},
                       "s3:DeleteObject": {"/images/locks/*", "/archtested/locks/*"}, "s3:ListBucket": {""},
                       "s3:GetBucketLocation": {""}}, granted


def test_an_archived_point_is_retrieved_before_the_worker_starts_and_failures_clean_up(control_template):
    states = definition_of(state_machine(control_template, "RestoreStateMachine"))["States"]
    assert states["Plan database restore"]["Next"] == "From the archive?"
    choice = states["From the archive?"]
    assert choice["Choices"][0]["Next"] == "Request archive retrieval"
    assert choice["Default"] == "Prepare restore worker"
    assert states["Request archive retrieval"]["Next"] == "Check archive retrieval"
    assert states["Archive retrieved?"]["Choices"][0]["Next"] == "Prepare restore worker"
    assert states["Wait for archive retrieval"]["SecondsPath"] == "$.retrieval.wait_seconds"
    for name in ("Request archive retrieval", "Check archive retrieval"):
        assert [c["Next"] for c in states[name]["Catch"]] == ["Clean up restore worker"]


def test_the_restore_timeout_leaves_room_for_the_longest_retrieval(control_template):
    machine = state_machine(control_template, "RestoreStateMachine")
    # 24 h for the restore itself + archive.retrieval_timeout_hours (0.005 h here, rounded up)
    assert definition_of(machine)["TimeoutSeconds"] == 25 * 3600


def test_the_lambda_asset_imports_the_repository_code_without_the_chunker(control_template, cdk_out: Path):
    function = next(f for logical, f in resources_of(control_template, "AWS::Lambda::Function").items()
                    if logical.startswith("RequestArchiveRetrieval"))
    asset = cdk_out / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    probe = ("import sys; sys.modules['fastcdc'] = None; sys.modules['fastcdc.fastcdc_cy'] = None\n"
             "import rdsbackup, rdsbackup_lambdas.handlers.request_archive_retrieval, rdsbackup.repository.archive\n"
             "print(rdsbackup.__file__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=asset,
                          env={**os.environ, "PYTHONPATH": str(asset)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(asset)), done.stdout


def test_the_lambda_and_the_worker_pin_the_same_zstandard():
    root = Path(__file__).resolve().parents[2]
    lambda_pins = {line.strip() for line in (root / "lambdas/requirements.txt").read_text().splitlines()}
    worker = (root / "worker_image/pyproject.toml").read_text()
    pin = next(p for p in lambda_pins if p.startswith("zstandard=="))
    assert f'"{pin}"' in worker
