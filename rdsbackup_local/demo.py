"""The local run: rds-backup end to end with no AWS account (`make local`).

Starts moto's server, synthesizes the CDK app with the demo policy from `cdk.json`, deploys the
stacks into moto, creates demo databases (a PostgreSQL instance, a tagged instance and an Aurora
cluster with three instances), runs the demo policy through the real state machine a few times (so
snapshot retention has something to remove), and prints the session report: snapshots, their
decoded tags, replicas, and what retention removed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, REGION = "123456789012", "us-east-1"
RUNS = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fake_credentials() -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                        "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_LOG_LEVEL": "WARNING",
                        "POWERTOOLS_METRICS_DISABLED": "1"}.items():
        os.environ[name] = value
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)


def _start_moto() -> str:
    from moto.moto_api._internal.models import moto_api_backend
    from moto.server import ThreadedMotoServer

    port = _free_port()
    # moto's Step Functions interpreter calls Lambda back through the server at MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto logs what it cannot deploy (topic policies, schedules: handled in moto_deploy) and the
    # interpreter's probing of optional input fields; neither is a problem of the run.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="moto")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    moto_api_backend.set_config({"stepfunctions": {"execute_state_machine": True},
                                 "lambda": {"use_docker": False}})
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


def _demo_config() -> dict:
    config = json.loads((ROOT / "cdk.json").read_text())["context"]["rdsbackup"]
    config = json.loads(json.dumps(config))
    config["control"] = {"account": ACCOUNT, "region": REGION}
    return config


def _create_demo_databases(rds, kms) -> None:
    key = kms.create_key(Description="demo databases' storage key")["KeyMetadata"]["Arn"]
    common = {"MasterUsername": "demo_admin", "MasterUserPassword": "local-demo-only-1",
              "StorageEncrypted": True, "KmsKeyId": key}
    rds.create_db_instance(DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t4g.small",
                           AllocatedStorage=20, **common)
    rds.create_db_instance(DBInstanceIdentifier="billing-db", Engine="postgres", DBInstanceClass="db.t4g.small",
                           AllocatedStorage=20, Tags=[{"Key": "rdsbackup:policy", "Value": "demo"}], **common)
    rds.create_db_cluster(DBClusterIdentifier="ledger", Engine="aurora-postgresql",
                          Tags=[{"Key": "rdsbackup:policy", "Value": "demo"}], **common)
    for number, zone in enumerate("abc", start=1):
        rds.create_db_instance(DBInstanceIdentifier=f"ledger-{number}", DBClusterIdentifier="ledger",
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
                               AvailabilityZone=f"{REGION}{zone}", PromotionTier=number - 1)
    rds.create_db_instance(DBInstanceIdentifier="scratch-db", Engine="postgres", DBInstanceClass="db.t4g.micro",
                           AllocatedStorage=20, **common)


def _run(sfn, state_machine_arn: str, name: str) -> dict:
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name,
                              input=json.dumps({"policy": "demo"}))["executionArn"]
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.1)
    report = json.loads(described["output"] if described["status"] == "SUCCEEDED" else described["cause"])
    report["_transitions"] = len(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])
    return report


def _print_report(report: dict, tags_of, decode) -> None:
    print(f"\nSession {report['session_id']}  policy={report['policy']}  status={report['status']}  "
          f"history events={report['_transitions']}")
    for resource in report["resources"]:
        print(f"  {resource['arn']}")
        print(f"    status: {resource['status']}   duration: {resource['duration_seconds']} s")
        if resource.get("error"):
            print(f"    error: {resource['error']}")
        snapshot = resource.get("snapshot_arn")
        if snapshot:
            metadata = decode(snapshot)
            source = metadata.get("source", {})
            print(f"    snapshot: {snapshot}")
            print(f"      plaintext tags: {sorted(k for k in tags_of(snapshot) if not k.startswith('rdsbackup:meta'))}"
                  f" + {sum(1 for k in tags_of(snapshot) if k.startswith('rdsbackup:meta'))} encrypted metadata tags")
            print(f"      decoded: policy={metadata.get('policy')} session={metadata.get('session_id')} "
                  f"source={source.get('id')} ({source.get('kind')}, {source.get('engine')})")
            for instance in (metadata.get("instances") or source.get("instances") or []):
                print(f"        instance {instance.get('identifier')}: {instance.get('class')} "
                      f"in {instance.get('availability_zone')}, promotion tier {instance.get('promotion_tier')}")
        for replica in resource.get("replica_arns") or []:
            print(f"    replica: {replica}")
        for deleted in resource.get("retention_deleted") or []:
            print(f"    retention removed: {deleted}")
        for warning in resource.get("warnings") or []:
            print(f"    warning: {warning}")


def main() -> int:
    _fake_credentials()
    endpoint = _start_moto()
    print(f"moto server: {endpoint}")
    from rdsbackup_local.lambda_runner import InProcessLambdas
    from rdsbackup_local.moto_deploy import deploy, session_factory
    from rdsbackup_local.moto_patches import install as install_moto_patches
    from rdsbackup_local.synth import synthesize

    install_moto_patches()
    with tempfile.TemporaryDirectory(prefix="rdsbackup-local-") as workdir:
        started = time.monotonic()
        cdk_out, backup_app = synthesize(_demo_config(), Path(workdir) / "cdk.out", account=ACCOUNT, region=REGION)
        print(f"synthesized {len(backup_app.stacks)} stacks: {', '.join(s.stack_name for s in backup_app.stacks)}")
        # The handlers log JSON lines to stdout as in Lambda; the report below is what to read here.
        with InProcessLambdas(extra_env={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "1"}):
            app = deploy(cdk_out, session_for_account=session_factory(ACCOUNT), default_account=ACCOUNT,
                         default_region=REGION)
            print(f"deployed into moto; state machine {app.state_machine_arn}")
            rds = boto3.client("rds", region_name=REGION)
            _create_demo_databases(rds, boto3.client("kms", region_name=REGION))
            print("demo databases: orders-db (by id), billing-db and Aurora cluster ledger (3 instances, by tag), "
                  "scratch-db (not selected)")
            sfn = boto3.client("stepfunctions", region_name=REGION)
            from rdsbackup_lambdas.tag_metadata import TagCodec

            functions = boto3.client("lambda", region_name=REGION).list_functions()["Functions"]
            key_arn = next(f for f in functions if "TagSnapshot" in f["FunctionName"])[
                "Environment"]["Variables"]["TAG_KMS_KEY_ARN"]
            codec = TagCodec(boto3.client("kms", region_name=REGION), key_arn)

            def tags_of(arn: str) -> dict:
                region = arn.split(":")[3]
                tags = boto3.client("rds", region_name=region).list_tags_for_resource(ResourceName=arn)["TagList"]
                return {t["Key"]: t["Value"] for t in tags}

            def decode(arn: str) -> dict:
                region = arn.split(":")[3]
                tags = boto3.client("rds", region_name=region).list_tags_for_resource(ResourceName=arn)["TagList"]
                return codec.decode(tags, arn)

            reports = []
            for run in range(1, RUNS + 1):
                reports.append(_run(sfn, app.state_machine_arn, f"demo-run-{run}"))
                print(f"run {run}: {reports[-1]['status']}")
                time.sleep(1.1)  # distinct session ids
            _print_report(reports[-1], tags_of, decode)
            total = sum(len(r.get("retention_deleted") or []) for report in reports for r in report["resources"])
            print(f"\nover {RUNS} runs retention removed {total} snapshots; took {time.monotonic() - started:.1f} s")
            return 0 if all(report["status"] != "Failed" for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
