"""The local run: rds-backup end to end with no AWS account (`make local`).

Starts moto's server and a local PostgreSQL server (TLS, with sample data) standing in for the RDS
endpoints, synthesizes the CDK app with the demo policy from `cdk.json`, deploys the stacks into moto,
creates demo databases (PostgreSQL instances and an Aurora cluster with three instances), runs the demo
policy through the real state machine a few times (so retention has something to remove): snapshot,
encrypted tags, replication, image-level backup through the real worker process, retention. Then it
restores through the restore state machine: a snapshot to a new instance, the Aurora cluster snapshot to
a new cluster with its three instances, and a restore point (listed with the CLI) into a new database
through the worker, checked against its source. Last, one restore test of orders-db: its newest
snapshot restored into a throwaway instance by the restore state machine run as a child of the
restore-test state machine, the worker's checks there, and the throwaway deleted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import boto3

from rdsbackup_local.demo_restore_test import run_restore_test
from rdsbackup_local.lambda_runner import InProcessLambdas  # also puts the Lambda package on sys.path

# The local stand-in for the RDS endpoints is the test suite's PostgreSQL launcher (Debian's server, run
# as the unprivileged postgres user on a loopback port).
from tests.support.postgres_server import (
    create_sample_database,
    ensure_role,
    running_server,
    schema_dump,
    table_checksums,
)

ROOT = Path(__file__).resolve().parent.parent
# Three accounts, as a deployment should have them (docs/security.md): the backup (control) account runs
# the state machines and holds the repositories, the production account holds the databases, the vault
# account the snapshot replicas. moto keeps each account's resources apart.
ACCOUNT, REGION = "123456789012", "us-east-1"
PRODUCTION, VAULT = "111122223333", "444455556666"
DEMO_TAG = {"Key": "rdsbackup:policy", "Value": "demo"}
DEMO_USER, DEMO_PASSWORD = "demo_admin", "local-demo-only-password"
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
    for policy in config["policies"]:
        policy["selection"]["accounts"] = [PRODUCTION]
        if policy.get("replication"):
            policy["replication"]["account"] = VAULT
    # Local snapshots and workers finish in seconds: poll every second or two instead of AWS's minutes.
    config["timing"] = {**config.get("timing", {}), "wait_initial_seconds": 1, "wait_max_seconds": 2}
    # the local run also proves a backup restores (cdk.json leaves restore tests off: they cost instance hours)
    for policy in config["policies"]:
        policy.setdefault("restore_test", {})
    for policy in config["policies"]:
        if policy.get("archive"):
            policy["archive"]["after_days"] = 0  # archive at once: the demo's restore points are minutes old
    return config


def _network(ec2, rds) -> str:
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")[
        "Subnet"]["SubnetId"] for i, zone in ((1, "a"), (2, "b"))]
    rds.create_db_subnet_group(DBSubnetGroupName="demo", DBSubnetGroupDescription="demo", SubnetIds=subnets)
    return ec2.create_security_group(GroupName="demo-db", Description="the app's DB group", VpcId=vpc)["GroupId"]


def _create_demo_databases(rds, kms, ec2, secrets, server) -> None:
    """The instances' endpoints are the local server; their RDS-managed master secrets hold the password
    of a role that is, as on RDS, not a superuser."""
    key = kms.create_key(Description="demo databases' storage key")["KeyMetadata"]["Arn"]
    group = _network(ec2, rds)
    common = {"MasterUsername": DEMO_USER, "StorageEncrypted": True, "KmsKeyId": key,
              "ManageMasterUserPassword": True, "Port": server.port, "DBSubnetGroupName": "demo",
              "VpcSecurityGroupIds": [group]}
    databases = [("orders-db", "instance", []), ("billing-db", "instance", [DEMO_TAG]),
                 ("ledger", "cluster", [DEMO_TAG])]
    for identifier, kind, tags in databases:
        if kind == "instance":
            created = rds.create_db_instance(DBInstanceIdentifier=identifier, Engine="postgres",
                                             DBInstanceClass="db.t4g.small", AllocatedStorage=20, Tags=tags,
                                             **common)["DBInstance"]
        else:
            created = rds.create_db_cluster(DBClusterIdentifier=identifier, Engine="aurora-postgresql", Tags=tags,
                                            **common)["DBCluster"]
            for number, zone in enumerate("abc", start=1):
                rds.create_db_instance(DBInstanceIdentifier=f"ledger-{number}", DBClusterIdentifier="ledger",
                                       Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
                                       AvailabilityZone=f"{REGION}{zone}", PromotionTier=number - 1)
        # Every endpoint is the one local server: give every managed secret the same demo credentials.
        secrets.put_secret_value(SecretId=created["MasterUserSecret"]["SecretArn"],
                                 SecretString=json.dumps({"username": DEMO_USER, "password": DEMO_PASSWORD}))
    server.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DEMO_USER}') THEN "
                   f"CREATE ROLE {DEMO_USER} LOGIN CREATEDB CREATEROLE PASSWORD '{DEMO_PASSWORD}'; END IF; END $$")
    ensure_role(server, "app_reader")
    create_sample_database(server, "shop", user=DEMO_USER, password=DEMO_PASSWORD)


def _run(sfn, state_machine_arn: str, name: str, execution_input: dict) -> dict:
    """Run one session to its end; its full report (from S3, where its summary says) with the session
    history's length."""
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name,
                              input=json.dumps(execution_input))["executionArn"]
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.1)
    summary = json.loads(described["output"] if described["status"] == "SUCCEEDED" else described["cause"])
    report = {**summary, "resources": []}
    if summary.get("report"):
        body = boto3.client("s3", region_name=REGION).get_object(
            Bucket=summary["report"]["bucket"], Key=summary["report"]["key"])["Body"]
        report = json.loads(body.read())
    report["_transitions"] = len(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])
    return report


def _print_report(report: dict, tags_of, decode) -> None:
    print(f"\nSession {report['session_id']}  policy={report['policy']}  status={report['status']}  "
          f"session history events={report['_transitions']} (each resource ran in its own execution)")
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
        if resource.get("restore_point_id"):
            print(f"    restore point: {resource['restore_point_id']} ({resource.get('bytes')} bytes)")
        for replica in resource.get("replica_arns") or []:
            print(f"    replica: {replica}")
        for deleted in resource.get("retention_deleted") or []:
            print(f"    retention removed: {deleted}")
        for warning in resource.get("warnings") or []:
            print(f"    warning: {warning}")


def _restores(sfn, restore_arn: str, server, endpoint: str, report: dict, rds) -> None:
    """Through the restore state machine: orders-db's snapshot to a new instance, the ledger cluster's
    snapshot to a new cluster with all three instances, and orders-db's newest restore point (listed with
    the CLI) into another database on the server, compared with its source. `rds`: the production
    account's, where the restores go."""
    orders = next(r for r in report["resources"] if r["arn"].endswith(":db:orders-db"))
    ledger = next(r for r in report["resources"] if r["arn"].endswith(":cluster:ledger"))

    def run(name: str, restore: dict) -> dict:
        started = time.monotonic()
        result = _run(sfn, restore_arn, name, restore)
        if result.get("status") != "Success":
            raise SystemExit(f"restore {name} failed: {result.get('error')}")
        result["_seconds"] = time.monotonic() - started
        return result

    print("\nrestores (the RestoreStateMachine):")
    instance = run("demo-restore-instance", {"restore": "snapshot", "snapshot_arn": orders["snapshot_arn"],
                                             "target": {"identifier": "orders-db-restored"}})
    restored = rds.describe_db_instances(DBInstanceIdentifier="orders-db-restored")["DBInstances"][0]
    print(f"  {orders['snapshot_arn'].split(':')[-1]} -> DB instance orders-db-restored "
          f"({restored['DBInstanceClass']}, {restored['DBInstanceStatus']}, public={restored['PubliclyAccessible']}) "
          f"in {instance['_seconds']:.1f} s, {instance['_transitions']} history events; settings from metadata: "
          f"{', '.join(instance['settings_from_metadata'])}")
    cluster = run("demo-restore-cluster", {"restore": "snapshot", "snapshot_arn": ledger["snapshot_arn"],
                                           "target": {"identifier": "ledger-restored"}})
    print(f"  {ledger['snapshot_arn'].split(':')[-1]} -> Aurora cluster ledger-restored in "
          f"{cluster['_seconds']:.1f} s, {cluster['_transitions']} history events:")

    def members(cluster_id: str) -> list[tuple]:
        found = rds.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": [cluster_id]}])["DBInstances"]
        return sorted((i["DBInstanceClass"], i["AvailabilityZone"], i["PromotionTier"]) for i in found)

    for created in cluster["created"][1:]:
        print(f"    instance {created['identifier']}: {created['class']} in {created['availability_zone']}, "
              f"promotion tier {created['promotion_tier']}{' (writer)' if created['writer'] else ''}")
    if members("ledger-restored") != members("ledger"):
        raise SystemExit("the restored cluster's instances differ from the source's")
    print("    class, AZ and promotion tier of all three instances equal to the source's")

    repository = "s3://rdsbackup-main-123456789012-us-east-1/demo"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    listed = subprocess.run(["rdsbackup", "list", "--repo", repository, "--source-id", "orders-db"], env=env,
                            capture_output=True, text=True, check=True)
    print(f"\nrestore points of orders-db in {repository}:\n{listed.stdout.rstrip()}")
    server.execute("DROP DATABASE IF EXISTS shop_restored WITH (FORCE)")
    database = run("demo-restore-database", {
        "restore": "database", "policy": "demo", "restore_point_id": orders["restore_point_id"],
        "target": {"arn": orders["arn"]}, "databases": ["shop"], "target_database": "shop_restored"})
    same = table_checksums(server, "shop_restored") == table_checksums(server, "shop") and \
        schema_dump(server, "shop_restored") == schema_dump(server, "shop")
    print(f"restored {orders['restore_point_id']} into database shop_restored through the worker in "
          f"{database['_seconds']:.1f} s: schema and every table's checksum "
          f"{'equal to' if same else 'DIFFERENT from'} the source")
    if not same:
        raise SystemExit("the restored database differs from its source")


def _archive_and_check(server, endpoint: str, sfn, app, report: dict) -> dict:
    """Run the backup-account session (archive into DEEP_ARCHIVE, retention), list the archive, restore
    orders-db's newest restore point from it (the Glacier retrieval included) and compare."""
    session = _run(sfn, app.workflow_arn("Maintenance"), "demo-maintenance", {"policy": "demo"})
    print(f"\nbackup-account session: {session['status']}; archived {len(session.get('archived') or [])} restore "
          f"points, forgot {len(session.get('forgotten') or [])}")
    orders = next(r for r in report["resources"] if r["arn"].endswith(":db:orders-db"))
    archive = "s3://rdsbackup-archive-123456789012-us-east-1/demo"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "DEMO_DB_PASSWORD": DEMO_PASSWORD}
    listed = subprocess.run(["rdsbackup", "list", "--repo", archive, "--source-id", "orders-db"], env=env,
                            capture_output=True, text=True, check=True)
    print(f"archived restore points of orders-db in {archive} (packs in DEEP_ARCHIVE):\n{listed.stdout.rstrip()}")
    server.execute("DROP DATABASE IF EXISTS shop_from_archive WITH (FORCE)")
    started = time.monotonic()
    restored = subprocess.run(
        ["rdsbackup", "restore", "postgres", "--repo", archive, "--restore-point", orders["restore_point_id"],
         "--host", "127.0.0.1", "--port", str(server.port), "--user", DEMO_USER, "--password-env", "DEMO_DB_PASSWORD",
         "--ca-bundle", server.ca_file, "--database", "shop", "--target-database", "shop_from_archive",
         "--retrieval-tier", "Bulk", "--wait", "--wait-interval", "1"],
        env=env, capture_output=True, text=True)
    if restored.returncode != 0:
        raise SystemExit(f"restore from the archive failed: {restored.stderr.strip()}")
    same = table_checksums(server, "shop_from_archive") == table_checksums(server, "shop") and \
        schema_dump(server, "shop_from_archive") == schema_dump(server, "shop")
    print(f"restored {orders['restore_point_id']} from the archive (retrieval requested, tier Bulk) into database "
          f"shop_from_archive in {time.monotonic() - started:.1f} s: "
          f"{'equal to' if same else 'DIFFERENT from'} the source")
    if not same:
        raise SystemExit("the database restored from the archive differs from its source")
    return session


def main() -> int:
    _fake_credentials()
    started = time.monotonic()
    endpoint = _start_moto()
    print(f"moto server: {endpoint}")
    from rdsbackup_lambdas.tag_metadata import TagCodec

    from rdsbackup_local.ecs_runner import LocalWorkers
    from rdsbackup_local.moto_deploy import deploy, session_factory
    from rdsbackup_local.moto_patches import install as install_moto_patches
    from rdsbackup_local.synth import synthesize


    install_moto_patches()
    with tempfile.TemporaryDirectory(prefix="rdsbackup-local-") as workdir, running_server(ssl=True) as server:
        print(f"PostgreSQL (TLS only) standing in for the RDS endpoints: 127.0.0.1:{server.port}")
        cdk_out, backup_app = synthesize(_demo_config(), Path(workdir) / "cdk.out", account=ACCOUNT, region=REGION)
        print(f"synthesized {len(backup_app.stacks)} stacks: {', '.join(s.stack_name for s in backup_app.stacks)}")
        worker_env = {"AWS_ENDPOINT_URL": endpoint, "RDSBACKUP_CA_BUNDLE": server.ca_file,
                      "RDSBACKUP_INIT_SETTLE_SECONDS": "0"}
        # The handlers log JSON lines to stdout as in Lambda; the report below is what to read here.
        quiet = {"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "1"}
        with InProcessLambdas(extra_env=quiet), \
                LocalWorkers(env=worker_env, host_for=lambda endpoint: "127.0.0.1", default_account=ACCOUNT) as workers:
            session_for = session_factory(ACCOUNT)
            app = deploy(cdk_out, session_for_account=session_for, default_account=ACCOUNT, default_region=REGION)
            machines = ", ".join(f"{name.removesuffix('StateMachineArn')}: {arn}"
                                 for name, arn in app.control.outputs.items()
                                 if name.endswith("StateMachineArn") and name != "StateMachineArn")
            print(f"deployed into moto; state machines {machines}")
            production = session_for(PRODUCTION)
            _create_demo_databases(*(production.client(service, region_name=REGION)
                                     for service in ("rds", "kms", "ec2", "secretsmanager")), server)
            print(f"accounts: backup (control) {ACCOUNT}, production {PRODUCTION}, vault (replicas) {VAULT}")
            print(f"demo databases in {PRODUCTION}: orders-db (by id), billing-db and Aurora cluster ledger "
                  "(3 instances, by tag)")
            sfn = boto3.client("stepfunctions", region_name=REGION)
            functions = boto3.client("lambda", region_name=REGION).list_functions()["Functions"]
            key_arn = next(f for f in functions if "TagSnapshot" in f["FunctionName"])[
                "Environment"]["Variables"]["TAG_KMS_KEY_ARN"]
            codec = TagCodec(boto3.client("kms", region_name=REGION), key_arn)

            def rds_of(arn: str):
                """RDS of the account and region the ARN names (production or vault)."""
                return session_for(arn.split(":")[4]).client("rds", region_name=arn.split(":")[3])

            def tags_of(arn: str) -> dict:
                return {t["Key"]: t["Value"] for t in rds_of(arn).list_tags_for_resource(ResourceName=arn)["TagList"]}

            def decode(arn: str) -> dict:
                return codec.decode(rds_of(arn).list_tags_for_resource(ResourceName=arn)["TagList"], arn)

            reports = []
            for run in range(1, RUNS + 1):
                reports.append(_run(sfn, app.workflow_arn("Backup"), f"demo-run-{run}", {"policy": "demo"}))
                print(f"run {run}: {reports[-1]['status']}  ({len(workers.runs)} worker runs so far)")
                time.sleep(1.1)  # distinct session ids
            _print_report(reports[-1], tags_of, decode)
            total = sum(len(r.get("retention_deleted") or []) for report in reports for r in report["resources"])
            print(f"\nover {RUNS} runs snapshot retention removed {total} snapshots")
            _restores(sfn, app.workflow_arn("Restore"), server, endpoint, reports[-1],
                      production.client("rds", region_name=REGION))
            session = _archive_and_check(server, endpoint, sfn, app, reports[-1])
            tested = run_restore_test(sfn, app.workflow_arn("RestoreTest"), app.workflow_arn("Restore"))
            print(f"\nlocal run finished in {time.monotonic() - started:.1f} s")
            ok = tested and session["status"] == "Success" and all(r["status"] == "Success" for r in reports)
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
