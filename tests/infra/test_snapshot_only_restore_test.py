"""A snapshot-only policy's restore tests (`restore_test.worker`): its production place gets the test worker
(cluster, task role, launch role), which may write only result documents into the results repository."""

import json

import pytest

from rdsbackup_local.synth import synthesize
from tests.infra.conftest import as_list, flatten, resources_of, role_statements

CONTROL, PROD, REGION = "123456789012", "210987654321", "us-east-1"
BUCKET = f"rdsbackup-main-{CONTROL}-{REGION}"
CONFIG = {
    "control": {"account": CONTROL, "region": REGION},
    "repositories": {"main": {}},
    "policies": [{
        "name": "ledger",
        "schedule": {"expression": "cron(0 3 * * ? *)"},
        "selection": {"resources": ["ledger-db"], "accounts": [PROD], "regions": [REGION]},
        "snapshot_retention": 3,
        "restore_test": {"worker": {"results_repository": "main",
                                    "secret_arn": f"arn:aws:secretsmanager:{REGION}:{PROD}:secret:ledger"}},
    }],
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, dict]:
    out, _ = synthesize(CONFIG, tmp_path_factory.mktemp("snaponly") / "cdk.out", account=CONTROL, region=REGION)
    return {path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in out.glob("*.template.json")}


def _access(templates) -> dict:
    [name] = [n for n in templates if n.startswith("RdsBackupAccess")]
    return templates[name]


def test_the_production_place_gets_the_test_worker_and_the_launch_role(templates):
    access = _access(templates)
    assert [c["Properties"]["ClusterName"] for c in resources_of(access, "AWS::ECS::Cluster").values()] == \
        ["rdsbackup-workers"]
    names = {flatten(r["Properties"].get("RoleName", "")) for r in resources_of(access, "AWS::IAM::Role").values()}
    assert f"rdsbackup-launch-{REGION}" in names and f"rdsbackup-worker-{REGION}" in names


def test_the_test_worker_writes_only_result_documents_and_reads_only_its_secret(templates):
    statements = role_statements(_access(templates))[f"rdsbackup-worker-{REGION}"]
    s3_resources = [flatten(r) for s in statements for r in as_list(s["Resource"])
                    if any(a.startswith("s3:") for a in as_list(s["Action"])) and BUCKET in flatten(r)]
    assert s3_resources and all(r in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/rdsbackup-results/{PROD}/*")
                                for r in s3_resources), s3_resources
    assert not any("s3:DeleteObject" in as_list(s["Action"]) and BUCKET in flatten(s["Resource"])
                   for s in statements)
    secrets = [flatten(r) for s in statements if "secretsmanager:GetSecretValue" in as_list(s["Action"])
               for r in as_list(s["Resource"])]
    assert f"arn:aws:secretsmanager:{REGION}:{PROD}:secret:ledger" in secrets


def test_the_repository_bucket_admits_the_test_worker_to_its_results_prefix_only(templates):
    control = templates["RdsBackupControl"]
    [policy] = [p for p in resources_of(control, "AWS::S3::BucketPolicy").values()
                if "Repository" in flatten(p["Properties"]["Bucket"])]
    granted = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Allow" and PROD in flatten(s["Principal"])]
    assert [s["Sid"] for s in granted] == [f"Resultsledger{PROD}useast1"]
    [statement] = granted
    worker_role = f"arn:aws:iam::{PROD}:role/rdsbackup-worker-{REGION}"
    assert statement["Condition"]["ArnEquals"]["aws:PrincipalArn"] == worker_role
    assert sorted(as_list(statement["Action"])) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    [resource] = [flatten(r) for r in as_list(statement["Resource"])]
    assert resource.endswith(f".Arn>/rdsbackup-results/{PROD}/*"), resource


def test_the_runtime_policy_names_the_test_workers_settings():
    from infra.config import parse_config
    from infra.topology import Place, build_topology, runtime_policies

    config = parse_config(CONFIG, default_account=CONTROL, default_region=REGION)
    policy = runtime_policies(config, build_topology(config, control=Place(CONTROL, REGION)))["ledger"]
    assert policy["image_backup"] is None
    worker = policy["restore_test"]["worker"]
    assert worker["repository_url"] is None and worker["result_prefix"] == f"s3://{BUCKET}/rdsbackup-results/"
    assert worker["secret_arn"].endswith(":secret:ledger") and worker["worker"]["cluster"] == "rdsbackup-workers"
