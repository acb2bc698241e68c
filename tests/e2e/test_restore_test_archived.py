"""Restore tests of archived restore points end to end (`restore_test.targets: archived_restore_point`): the
synthesized restore-test state machine in moto retrieves the newest archived points' packs, all of a run's
at once (the restore workflow's retrieval loop, Glacier retrievals kept in progress by `slow_retrievals`),
restores the newest snapshot into a throwaway as a child restore, and the real worker restores the archived
point from the archive repository: into the local PostgreSQL standing in for the throwaway, comparing every
table, or (SQL Server) through the temporary bucket into the fake RDS SQL Server, checking the database."""

from __future__ import annotations

import json
import sys
import time

import boto3
import pytest
from rdsbackup_lambdas.handlers import check_archive_retrieval, request_archive_retrieval

from rdsbackup_local.moto_patches import slow_retrievals
from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import (
    create_postgres_instance,
    network,
    nothing_left,
    temporary_leftovers,
    throwaway_instances,
)
from tests.e2e.sqlserver_points import (
    backed_up_digest,
    bucket_leases,
    restored_baks,
    restored_digests,
    sqlserver_backed_up,
)
from tests.support.postgres_server import create_sample_database, ensure_role

SCRATCH = "rdsbackup_test_shop"
ARCHIVE_BUCKET = f"rdsbackup-cold-{CONTROL_ACCOUNT}-{REGION}"


@pytest.fixture
def shop_db(tls_postgres):
    """shop-db, selected by `archtested`: the local server's `shop`; dropped again after the test."""
    ensure_role(tls_postgres, "app_reader")
    for name in ("shop", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "archtested"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    yield db
    for name in ("shop", SCRATCH):
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def archived(server_harness, shop_db):
    """shop-db backed up once by policy `archtested`, then archived by its backup-account session:
    yields the archived restore point's id."""
    backup = report_of(server_harness.run({"policy": "archtested"}, name="at-backup", timeout=300))
    assert backup["status"] == "Success", backup
    assert _archive(server_harness) == [backup["resources"][0]["restore_point_id"]]
    return backup["resources"][0]["restore_point_id"]


def _archive(harness) -> list[str]:
    """The backup-account session of `archtested` (after_days 0: it archives every point): what it archived."""
    session = harness.run({"policy": "archtested"}, name="at-archive", workflow="Maintenance", timeout=300)
    assert session["status"] == "SUCCEEDED", session.get("cause")
    return json.loads(session["output"])["archived"]


@pytest.fixture
def archived_sqlserver(server_harness, tmp_path, request):
    """mssql-db (the fake RDS SQL Server) backed up once by `archtested`, then archived; the test worker meets the
    fake `request.param` describes (default: native restores succeed). Yields (archived point, the fake's
    call log), inside tls_requests (moto would refuse the TLS-only temporary bucket's object calls)."""
    from rdsbackup_local.moto_patches import tls_requests

    with tls_requests():
        restore_point, calls = sqlserver_backed_up(server_harness, tmp_path, "archtested",
                                                   **getattr(request, "param", {}))
        assert _archive(server_harness) == [restore_point]
        yield restore_point, calls


@pytest.fixture
def archived_pair(server_harness, shop_db, tmp_path):
    """shop-db (PostgreSQL) and mssql-db (the fake RDS SQL Server), both backed up by one `archtested` session
    and archived by one backup-account session: yields {"shop-db": point, "mssql-db": point}."""
    from rdsbackup_local.moto_patches import tls_requests

    with tls_requests():
        mssql, _ = sqlserver_backed_up(server_harness, tmp_path, "archtested")  # the session backs up both
        archived = _archive(server_harness)
        assert len(archived) == 2 and mssql in archived, archived
        yield {"shop-db": next(p for p in archived if p != mssql), "mssql-db": mssql}


def _run_test(harness, name: str) -> tuple[dict, dict]:
    started = time.monotonic()
    described = harness.run({"policy": "archtested"}, name=name, timeout=300, workflow="RestoreTest")
    described["wall_seconds"] = round(time.monotonic() - started, 1)
    return described, report_of(described)


def _entered(harness, execution_arn: str, state: str | None = None) -> int:
    return sum(1 for e in harness.history(execution_arn) if e["type"].endswith("StateEntered")
               and (state is None or e["stateEnteredEventDetails"]["name"] == state))


def _test_jobs(harness) -> list[dict]:
    return [run.job for run in harness.workers.runs.values() if run.job.get("kind") == "restore_test"]


def _retrieved_keys() -> list[str]:
    s3 = boto3.client("s3", region_name=REGION)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="archtested/",
                                                 OptionalObjectAttributes=["RestoreStatus"])["Contents"]
            if "RestoreStatus" in o]


def _live_locks() -> list[str]:
    s3 = boto3.client("s3", region_name=REGION)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="archtested/locks/").get("Contents")
            or []]


class Retrievals:
    """What the retrieval loops saw: every request and check, as (time, restore point, packs waiting)."""

    def __init__(self, together: int):
        self.together = together
        self.requests: list[tuple[float, str, int]] = []
        self.checks: list[tuple[float, str, int]] = []

    def checks_of(self, point: str) -> list[int]:
        return [waiting for _, checked, waiting in self.checks if checked == point]

    def due(self) -> bool:
        """Glacier's hours are over: `together` retrievals have been asked for, and checked twice since (two
        waits)."""
        if len({point for _, point, _ in self.requests}) < self.together:
            return False
        last_request = max(at for at, _, _ in self.requests)
        return sum(1 for at, _, _ in self.checks if at > last_request) >= 2


@pytest.fixture
def slow_retrieval(monkeypatch):
    """Glacier retrievals stay in progress until every point the run retrieves (`together`, 1 unless the test
    says more) has been asked for and the run has then checked twice, as retrievals of hours running together
    would: two waits in all. A retrieval asked for only after another has completed never completes (as that
    other would have waited for it forever)."""
    seen = Retrievals(together=1)
    real_check, real_request = check_archive_retrieval.poll, request_archive_retrieval.poll
    with slow_retrievals() as retrievals:
        def check(retrieval, *, first):
            if seen.due():
                retrievals.complete()
            seen.checks.append((time.time(), retrieval.restore_point_id, retrieval.waiting))
            return real_check(retrieval, first=first)

        def request(retrieval, *, first):
            seen.requests.append((time.time(), retrieval.restore_point_id, 0))
            return real_request(retrieval, first=first)

        monkeypatch.setattr(check_archive_retrieval, "poll", check)
        monkeypatch.setattr(request_archive_retrieval, "poll", request)
        yield seen


def test_the_newest_archived_point_is_retrieved_restored_from_the_archive_and_passes(
        server_harness, archived, slow_retrieval, tls_postgres):
    described, report = _run_test(server_harness, "at-good")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    [source] = report["sources"]
    assert source["status"] == "Passed" and source["failures"] == [], source
    assert source["archived"] is True and source["restore_point_id"] == archived
    assert source["tables_checked"] >= 10
    # the retrieval loop ran before the test: two waits while the packs were in Glacier
    assert _entered(server_harness, described["executionArn"], "Wait for archive retrieval") == 2
    checks = slow_retrieval.checks_of(archived)
    assert checks[0] > 0 and len(checks) == 3 and len(slow_retrieval.checks) == 3
    assert source["retrieval"]["storage_class"] == "DEEP_ARCHIVE" and source["retrieval"]["tier"] == "Bulk"
    assert source["retrieval"]["requested"] == source["retrieval"]["packs"] > 0
    restored = _retrieved_keys()
    assert restored and all(key.startswith("archtested/data/") for key in restored)
    # the worker restored the point from the archive repository, nothing checked on the snapshot itself
    [job] = _test_jobs(server_harness)
    assert job["repository"] == f"s3://{ARCHIVE_BUCKET}/archtested"
    assert job["restore_point_id"] == archived and job["check_snapshot"] is False
    assert job["result_url"].startswith("s3://rdsbackup-main-")
    # no lock of the test is left in the archive (tests/worker/test_restore_test_job.py: held while it reads)
    assert _live_locks() == []
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()
    [child] = server_harness.sfn.list_executions(stateMachineArn=server_harness.app.workflow_arn("Restore"))[
        "executions"]
    print(f"\narchived restore test: {_entered(server_harness, described['executionArn'])} transitions "
          f"(+ {_entered(server_harness, child['executionArn'])} in the restore), "
          f"{described['wall_seconds']} s", file=sys.stderr)


def test_an_archived_point_whose_restored_data_differs_fails_naming_the_table(
        server_harness, archived, tls_postgres):
    server_harness.workers.behaviour = lambda job: (
        [sys.executable, "-m", "tests.e2e.restore_test_worker", "alter", tls_postgres.conninfo()]
        if job.get("kind") == "restore_test" else "run")
    described, report = _run_test(server_harness, "at-altered")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and source["archived"] is True
    assert any(f"restore point {archived}: database shop, table app.orders: same row count, different data" in f
               for f in source["failures"]), source
    assert throwaway_instances() == [] and nothing_left(), temporary_leftovers()


@pytest.mark.parametrize("engine", ["postgres", "sqlserver"])
def test_a_retrieval_that_never_completes_fails_the_test_before_any_throwaway_or_worker(server_harness, engine,
                                                                                       request):
    request.getfixturevalue("archived" if engine == "postgres" else "archived_sqlserver")
    runs_before = len(server_harness.workers.runs)
    with slow_retrievals():
        described, report = _run_test(server_harness, "at-timeout")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and source["archived"] is True
    assert source["failures"][0].startswith("ArchiveRetrievalTimedOut"), source
    assert "DEEP_ARCHIVE" in source["failures"][0]
    assert len(server_harness.workers.runs) == runs_before, "no worker starts for a point that is not readable"
    assert server_harness.sfn.list_executions(
        stateMachineArn=server_harness.app.workflow_arn("Restore"))["executions"] == [], "no throwaway restored"
    # nor a temporary bucket or its lease (a SQL Server point takes them only once its packs are readable)
    assert throwaway_instances() == [] and nothing_left() and bucket_leases() == [], temporary_leftovers()


def test_an_archived_sqlserver_point_is_retrieved_then_its_bak_restored_from_the_archive_through_the_bucket(
        server_harness, archived_sqlserver, slow_retrieval):
    """The .bak comes from the ARCHIVE repository (its packs retrieved first) through the temporary bucket
    (leased by Prepare restore test) into the throwaway with rds_restore_database; the restored database is
    ONLINE and passes DBCC CHECKDB; then the throwaway, groups, lease and bucket are gone."""
    point, calls = archived_sqlserver
    described, report = _run_test(server_harness, "at-mssql")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    [source] = report["sources"]
    assert source["status"] == "Passed" and source["failures"] == [], source
    assert source["archived"] is True and source["restore_point_id"] == point
    assert source["retrieval"]["requested"] == source["retrieval"]["packs"] > 0
    assert _entered(server_harness, described["executionArn"], "Wait for archive retrieval") == 2
    restored = _retrieved_keys()
    assert restored and all(key.startswith("archtested/data/") for key in restored)
    [job] = _test_jobs(server_harness)
    assert job["engine"] == "sqlserver" and job["repository"] == f"s3://{ARCHIVE_BUCKET}/archtested"
    assert job["restore_point_id"] == point and job["check_snapshot"] is False
    [bak] = restored_baks(calls)
    assert bak == (f"arn:aws:s3:::{job['sqlserver']['temp_bucket']}/{job['sqlserver']['temp_prefix']}"
                   "rdsbackup_test_appdb.bak")
    # what RDS read back is the .bak the backup's native backup wrote, by way of the archive
    assert restored_digests(calls) == {"rdsbackup_test_appdb": backed_up_digest()}
    checks = [sql for sql, _ in map(json.loads, calls.read_text().splitlines()) if sql.startswith("DBCC CHECKDB")]
    assert checks == ["DBCC CHECKDB ([rdsbackup_test_appdb]) WITH NO_INFOMSGS, ALL_ERRORMSGS"]
    assert _live_locks() == []
    assert throwaway_instances() == [] and nothing_left() and bucket_leases() == [], temporary_leftovers()
    [child] = server_harness.sfn.list_executions(stateMachineArn=server_harness.app.workflow_arn("Restore"))[
        "executions"]
    print(f"\narchived SQL Server restore test: {_entered(server_harness, described['executionArn'])} transitions "
          f"(+ {_entered(server_harness, child['executionArn'])} in the restore), "
          f"{described['wall_seconds']} s", file=sys.stderr)


@pytest.mark.parametrize("archived_sqlserver", [{"statuses": ["IN_PROGRESS", "ERROR"]}], indirect=True)
def test_an_archived_sqlserver_point_that_rds_cannot_restore_fails_naming_why_and_still_cleans_up(
        server_harness, archived_sqlserver):
    point, calls = archived_sqlserver
    described, report = _run_test(server_harness, "at-mssql-error")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and source["archived"] is True and source["restore_point_id"] == point
    assert any("native restore of database 'rdsbackup_test_appdb'" in f and "Aborted the task" in f
               for f in source["failures"]), source
    assert len(restored_baks(calls)) == 1
    assert _live_locks() == []
    assert throwaway_instances() == [] and nothing_left() and bucket_leases() == [], temporary_leftovers()


def test_a_source_with_nothing_archived_yet_is_a_failed_test_naming_the_archive(server_harness, tls_postgres):
    ensure_role(tls_postgres, "app_reader")
    tls_postgres.execute("DROP DATABASE IF EXISTS shop WITH (FORCE)")
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "archtested"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    backup = report_of(server_harness.run({"policy": "archtested"}, name="at-backup-only", timeout=300))
    assert backup["status"] == "Success", backup
    described, report = _run_test(server_harness, "at-nothing")
    assert described["status"] == "FAILED" and described["error"] == "RestoreTestFailed"
    [source] = report["sources"]
    assert source["status"] == "Failed" and source["archived"] is True
    assert source["failures"] == [f"NothingToTest: {db['arn']} has no restore point in archive repository "
                                  "'cold' yet"], source
    assert _test_jobs(server_harness) == [] and throwaway_instances() == [] and nothing_left(), temporary_leftovers()
    tls_postgres.execute("DROP DATABASE IF EXISTS shop WITH (FORCE)")


def test_a_runs_archived_points_are_retrieved_together_so_two_cost_the_waits_of_one(
        server_harness, archived_pair, slow_retrieval):
    """Two sources' archived points (PostgreSQL and SQL Server): both retrievals are asked for before any test,
    the first archived test waits as a single source's does (two waits, three checks) and the second finds its
    point retrieved at its first check: N points cost one retrieval wait, not N."""
    slow_retrieval.together = 2
    described, report = _run_test(server_harness, "at-pair")
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    tested = {source["source"].rsplit(":", 1)[1]: source for source in report["sources"]}
    assert set(tested) == {"shop-db", "mssql-db"}
    for name, source in tested.items():
        assert source["status"] == "Passed" and source["archived"] is True, source
        assert source["restore_point_id"] == archived_pair[name]
    assert tested["shop-db"]["tables_checked"] >= 10
    assert sorted(job["engine"] for job in _test_jobs(server_harness)) == ["postgres", "sqlserver"]
    first, second = (archived_pair[report["sources"][n]["source"].rsplit(":", 1)[1]] for n in (0, 1))
    assert len(slow_retrieval.checks_of(first)) == 3 and len(slow_retrieval.checks_of(second)) == 1, \
        slow_retrieval.checks
    # in the run's history: both retrievals asked for before the first check; two waits in all
    names = [e["stateEnteredEventDetails"]["name"] for e in server_harness.history(described["executionArn"])
             if e["type"].endswith("StateEntered")]
    requested = [i for i, name in enumerate(names) if name == "Request archive retrieval"]
    assert len(requested) == 2 and requested[1] < names.index("Check archive retrieval"), names
    assert names.count("Wait for archive retrieval") == 2, names
    assert throwaway_instances() == [] and nothing_left() and bucket_leases() == [], temporary_leftovers()
    print(f"\ntwo archived points tested: {len(names)} transitions, {described['wall_seconds']} s", file=sys.stderr)
