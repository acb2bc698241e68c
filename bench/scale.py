"""The scale benchmark (`make bench-scale`): one backup session of N databases across 10 accounts x 3 regions,
in moto, through the synthesized state machines with the real handlers (issue 11's table).

For each N (default 10, 100, 1000; RDSBACKUP_BENCH_SCALE_N="10 100" to choose):
1. A fresh moto world (mock_aws, executing state machines; rdsbackup_local.moto_patches in place), the
   app synthesized for a config of 10 production accounts x 3 regions and one vault account-region,
   every stack deployed into moto (rdsbackup_local.moto_deploy), fast timing (no real waits).
2. N DB instances and Aurora clusters (every 10th), spread evenly over the 30 account-regions.
3. Snapshot-only: one session of the `fleet` policy (all 30 account-regions, concurrency 40).
4. Replicated: the same N databases, one policy per production account (a replicating policy selects
   from one account), all 10 sessions at once, each replica copied into the one vault account-region
   (staged in the source account's copy of that region first: two copies per resource). The vault's
   manual-snapshot quota stands raised to 2,000 (moto_patches.MANUAL_SNAPSHOT_QUOTAS, as a Service
   Quotas increase would): 1,000 replicas do not fit AWS's default 100, and the copy fails at once
   with ManualSnapshotQuotaFull without it.
5. Measured from moto's execution histories and counters in this process: the session's history
   events, the largest state input/output in any history (session and every resource execution), the
   largest resource-execution history, states entered per resource (+1: the Distributed Map's task that
   starts it, which moto does not record), Lambda invocations and RDS API calls per resource, the peak
   of copy slots in use per destination account-region and of manual snapshots per account-region, and
   the harness's wall and CPU time. Prints a markdown table and writes bench/results/scale-<time>.{json,md}.

moto makes snapshots available at once: every snapshot is checked once (a real 20-minute snapshot adds
3 transitions per further check: Wait, Check, Choice). Wall time is the harness's (in-process Lambdas run
one at a time), not AWS's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
                   "POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "1"})
from rdsbackup_local.moto_speed import ENVIRONMENT as FAST_MOTO_ENVIRONMENT  # noqa: E402

os.environ.update(FAST_MOTO_ENVIRONMENT)  # before moto creates its first EC2 backend

import boto3  # noqa: E402
import botocore.client  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.rds import models as rds_models  # noqa: E402

CONTROL = "123456789012"
ACCOUNTS = [f"{100000000000 + n * 1111:012d}" for n in range(1, 11)]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
VAULT = ("999999999999", "eu-central-1")
CONCURRENCY = 40
PAYLOAD_LIMIT = 256 * 1024
TIMING = {"retry_interval_seconds": 1, "retry_max_attempts": 2, "retry_backoff_rate": 1.0,
          "not_available_max_attempts": 2, "wait_initial_seconds": 0, "wait_max_seconds": 1, "wait_factor": 2.0,
          "wait_timeout_seconds": 600, "slot_wait_timeout_seconds": 3600, "lease_seconds": 3600,
          "sg_delete_attempts": 3, "sg_delete_interval_seconds": 0.1}
# RDSBACKUP_BENCH_SCALE_SCENARIOS="snapshot" runs the snapshot-only session alone
SCENARIOS = os.environ.get("RDSBACKUP_BENCH_SCALE_SCENARIOS", "snapshot replicated").split()
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def bench_config(n: int) -> dict:
    schedule = {"expression": "cron(0 3 * * ? *)", "timezone": "UTC"}
    policies = [{"name": "fleet", "schedule": schedule, "selection": {"tags": {"backup": "fleet"},
                 "accounts": ACCOUNTS, "regions": REGIONS}, "snapshot_retention": 2, "concurrency": CONCURRENCY,
                 "max_resources": max(n, 1)}]
    for number, account in enumerate(ACCOUNTS):
        policies.append({"name": f"vault-{number}", "schedule": schedule,
                         "selection": {"tags": {"backup": "fleet"}, "accounts": [account], "regions": REGIONS},
                         "snapshot_retention": 2, "concurrency": CONCURRENCY, "max_resources": max(n, 1),
                         "replication": {"account": VAULT[0], "region": VAULT[1], "retention": 2}})
    return {"control": {"account": CONTROL, "region": REGIONS[0]}, "timing": TIMING, "policies": policies}


def session_in(account: str) -> boto3.Session:
    if account == CONTROL:
        return boto3.Session()
    credentials = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/bench",
                                                  RoleSessionName="bench")["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"])


def create_databases(n: int) -> None:
    places = [(account, region) for account in ACCOUNTS for region in REGIONS]
    clients = {(a, r): session_in(a).client("rds", region_name=r) for a, r in places}
    for number in range(n):
        rds = clients[places[number % len(places)]]
        tags = [{"Key": "backup", "Value": "fleet"}]
        if number % 10 == 9:
            rds.create_db_cluster(DBClusterIdentifier=f"cluster-{number:04d}", Engine="aurora-postgresql",
                                  MasterUsername="bench_user", MasterUserPassword="not-a-real-secret-1", Tags=tags)
        else:
            rds.create_db_instance(DBInstanceIdentifier=f"db-{number:04d}", Engine="postgres",
                                   DBInstanceClass="db.t3.micro", AllocatedStorage=20, MasterUsername="bench_user",
                                   MasterUserPassword="not-a-real-secret-1", Tags=tags)


class Counters:
    """RDS calls, slot peaks and manual-snapshot peaks, counted while a scenario runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rds_calls = 0
        self.copy_peak: dict[str, int] = defaultdict(int)
        self.snapshot_peak: dict[str, int] = defaultdict(int)

    def reset(self):
        with self.lock:
            self.rds_calls = 0
            self.copy_peak.clear()
            self.snapshot_peak.clear()

    def install(self):
        from rdsbackup_lambdas import slots

        from rdsbackup_local.moto_patches import manual_snapshot_usage

        counters = self
        make_api_call = botocore.client.BaseClient._make_api_call

        def counted_call(client, operation, params):
            if client.meta.service_model.service_name == "rds":
                with counters.lock:
                    counters.rds_calls += 1
            return make_api_call(client, operation, params)

        botocore.client.BaseClient._make_api_call = counted_call
        acquire = slots.acquire

        def counted_acquire(table, kind, account, region, holder, **kwargs):
            in_use = acquire(table, kind, account, region, holder, **kwargs)
            if kind == slots.COPY and in_use is not None:
                with counters.lock:
                    counters.copy_peak[f"{account}/{region}"] = max(counters.copy_peak[f"{account}/{region}"], in_use)
            return in_use

        slots.acquire = counted_acquire
        for name, kind in (("create_db_snapshot", "instance"), ("copy_db_snapshot", "instance"),
                           ("create_db_cluster_snapshot", "cluster"), ("copy_db_cluster_snapshot", "cluster")):
            self._count_snapshots(name, kind, manual_snapshot_usage)

    def _count_snapshots(self, name, kind, usage):
        original = getattr(rds_models.RDSBackend, name)
        counters = self

        def made(backend, *args, **kwargs):
            result = original(backend, *args, **kwargs)
            place = f"{backend.account_id}/{backend.region_name}"
            total = usage(backend, "instance")[0] + usage(backend, "cluster")[0]
            with counters.lock:
                counters.snapshot_peak[place] = max(counters.snapshot_peak[place], total)
            return result

        setattr(rds_models.RDSBackend, name, made)


def history(sfn, arn: str) -> list[dict]:
    events, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def largest_payload(events: list[dict]) -> int:
    sizes = [0]
    for event in events:
        for details in event.values():
            if isinstance(details, dict):
                sizes += [len(details[key].encode()) for key in ("input", "output")
                          if isinstance(details.get(key), str)]
    return max(sizes)


def run_sessions(app, lambdas, counters: Counters, policies: list[str], label: str) -> dict:
    sfn = boto3.client("stepfunctions", region_name=REGIONS[0])
    counters.reset()
    invoked_before = len(lambdas.invocations)
    started, cpu_started = time.monotonic(), time.process_time()
    arns = [sfn.start_execution(stateMachineArn=app.workflow_arn("Backup"), name=f"{label}-{policy}",
                                input=json.dumps({"policy": policy}))["executionArn"] for policy in policies]
    described = []
    for arn in arns:
        while (state := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.5)
        described.append(state)
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    summaries = [json.loads(d.get("output") or d.get("cause") or "{}") for d in described]
    sessions = [history(sfn, arn) for arn in arns]
    session_ids = {s.get("session_id") for s in summaries}
    children = [e["executionArn"] for page in sfn.get_paginator("list_executions").paginate(
        stateMachineArn=app.workflow_arn("ResourceBackup")) for e in page["executions"]
        if e["name"].rsplit("-", 1)[0] in session_ids]
    child_histories = [history(sfn, arn) for arn in children]
    resources = sum(s.get("counts", {}).get("resources", 0) for s in summaries)
    succeeded = sum(s.get("counts", {}).get("succeeded", 0) + s.get("counts", {}).get("warnings", 0)
                    for s in summaries)
    entered = [sum(1 for e in h if e["type"].endswith("StateEntered")) + 1 for h in child_histories]
    handlers = Counter(i.handler.split(".")[-2] for i in lambdas.invocations[invoked_before:])
    per_resource = sum(count for handler, count in handlers.items()
                       if handler not in ("resolve_policy", "session_report"))
    return {
        "sessions": len(arns),
        "statuses": sorted({d["status"] for d in described}),
        "resources": resources,
        "backed_up": succeeded,
        "session_history_events": max(len(h) for h in sessions),
        "largest_payload_bytes": max([largest_payload(h) for h in sessions + child_histories]),
        "largest_child_history_events": max((len(h) for h in child_histories), default=0),
        "transitions_per_resource": round(sum(entered) / max(len(entered), 1), 2),
        "lambda_invocations_per_resource": round(per_resource / max(resources, 1), 2),
        "rds_calls_per_resource": round(counters.rds_calls / max(resources, 1), 2),
        "peak_copy_slots": dict(counters.copy_peak),
        "peak_manual_snapshots": max(counters.snapshot_peak.values(), default=0),
        "peak_manual_snapshots_source": max((v for k, v in counters.snapshot_peak.items()
                                             if not k.startswith(VAULT[0])), default=0),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "failed_examples": [f for s in summaries for f in s.get("failed_resources", [])][:3],
    }


def measure(n: int, workdir: Path) -> dict:
    from rdsbackup_local import moto_patches
    from rdsbackup_local.lambda_runner import InProcessLambdas
    from rdsbackup_local.moto_deploy import deploy, session_factory
    from rdsbackup_local.moto_speed import fast_harness
    from rdsbackup_local.synth import synthesize

    counters = Counters()
    with (mock_aws(config=MOTO_CONFIG), moto_patches.aws_behaviour(), fast_harness(),
          InProcessLambdas() as lambdas):
        counters.install()
        moto_patches.MANUAL_SNAPSHOT_QUOTAS[(*VAULT, "ManualSnapshots")] = 2000
        moto_patches.MANUAL_SNAPSHOT_QUOTAS[(*VAULT, "ManualClusterSnapshots")] = 2000
        deploy_started = time.monotonic()
        cdk_out, _ = synthesize(bench_config(n), workdir / f"cdk-{n}.out", account=CONTROL, region=REGIONS[0])
        app = deploy(cdk_out, session_for_account=session_factory(CONTROL), default_account=CONTROL,
                     default_region=REGIONS[0])
        create_databases(n)
        print(f"N={n}: synthesized, deployed {len(app.stacks)} stacks, created databases in "
              f"{time.monotonic() - deploy_started:.0f} s", flush=True)
        snapshot_only = replicated = None
        if "snapshot" in SCENARIOS:
            snapshot_only = run_sessions(app, lambdas, counters, ["fleet"], f"n{n}-snap")
            print(f"N={n} snapshot-only: {json.dumps(snapshot_only)}", flush=True)
            time.sleep(1.1)  # distinct session ids
        if "replicated" in SCENARIOS:
            # one session per production account that has databases (N < 30 leaves some empty)
            used = sorted({(number % (len(ACCOUNTS) * len(REGIONS))) // len(REGIONS) for number in range(n)})
            replicated = run_sessions(app, lambdas, counters, [f"vault-{i}" for i in used], f"n{n}-repl")
            print(f"N={n} replicated: {json.dumps(replicated)}", flush=True)
    return {"n": n, "snapshot_only": snapshot_only, "replicated": replicated}


ROWS = [
    ("sessions (executions of BackupStateMachine)", lambda r: r["sessions"]),
    ("resources backed up / selected", lambda r: f"{r['backed_up']} / {r['resources']}"),
    ("session history events (largest session)", lambda r: r["session_history_events"]),
    ("largest state payload (KiB; session and resource executions)",
     lambda r: f"{r['largest_payload_bytes'] / 1024:.1f}"),
    ("largest resource-execution history (events)", lambda r: r["largest_child_history_events"]),
    ("transitions per resource (states entered + the Map's start task)", lambda r: r["transitions_per_resource"]),
    ("Lambda invocations per resource", lambda r: r["lambda_invocations_per_resource"]),
    ("RDS API calls per resource", lambda r: r["rds_calls_per_resource"]),
    ("peak copy slots in use per destination account-region",
     lambda r: max(r["peak_copy_slots"].values(), default=0)),
    ("peak manual snapshots per account-region (sources)", lambda r: r["peak_manual_snapshots_source"]),
    ("peak manual snapshots per account-region (any, incl. the vault)", lambda r: r["peak_manual_snapshots"]),
    ("harness wall time (s)", lambda r: r["wall_seconds"]),
    # the process's CPU time over the same span (every thread): what the harness costs, whatever the load
    ("harness CPU time (s)", lambda r: r.get("cpu_seconds", "-")),
]


def table(results: list[dict]) -> str:
    header = "| figure | " + " | ".join(f"N={r['n']} snapshots | N={r['n']} replicated" for r in results) + " |"
    lines = [header, "|---|" + "---|---|" * len(results)]
    def cell(run: dict | None, value) -> str:
        return "not run" if run is None else str(value(run))

    for label, value in ROWS:
        cells = [f"{cell(r['snapshot_only'], value)} | {cell(r['replicated'], value)}" for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    sizes = [int(n) for n in os.environ.get("RDSBACKUP_BENCH_SCALE_N", "10 100 1000").split()]
    results = []
    with tempfile.TemporaryDirectory(prefix="rdsbackup-scale-") as workdir:
        for n in sizes:
            results.append(measure(n, Path(workdir)))
    markdown = table(results)
    print("\n" + markdown)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"scale-{stamp}.json").write_text(json.dumps(results, indent=1))
    (out / f"scale-{stamp}.md").write_text(markdown + "\n")
    ok = all(r[k]["backed_up"] == r[k]["resources"] == r["n"] for r in results for k in ("snapshot_only", "replicated")
             if r[k] is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
