"""Restore-test validation against a real PostgreSQL: digests recorded at backup time, recomputed from a
restored database; an altered row is found and its table named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres, table_digest
from rdsbackup.postgres import backup as backup_module
from rdsbackup.postgres.validate import check_server, validate_restore_point
from rdsbackup.repository import Repository

from tests.support.postgres_server import SAMPLE_ROLE, create_sample_database, ensure_role, shared_server

pytestmark = pytest.mark.postgres

PASSPHRASE = "validation passphrase"
SOURCE, RESTORED = "val_src", "val_restored"


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    ensure_role(server, SAMPLE_ROLE)
    for name in (SOURCE, RESTORED):
        server.drop_database(name)
    create_sample_database(server, SOURCE)
    yield server
    for name in (SOURCE, RESTORED):
        server.drop_database(name)


@pytest.fixture(scope="module")
def superuser(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory) -> str:
    url = f"file://{tmp_path_factory.mktemp('validation-repo')}"
    Repository.init(url, password=PASSPHRASE)
    return url


@pytest.fixture(scope="module")
def repo(repo_url):
    return Repository.open(repo_url, password=PASSPHRASE)


@pytest.fixture(scope="module")
def restore_point(server, superuser, repo) -> dict:
    return backup_postgres(repo, superuser, databases=[SOURCE], source_id="val-db", jobs=2)


@pytest.fixture
def restored(server, superuser, repo, restore_point):
    """A fresh restore of the restore point under another name (what the throwaway instance holds)."""
    server.drop_database(RESTORED)
    restore_postgres(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                     target_database=RESTORED)
    yield RESTORED
    server.drop_database(RESTORED)


def _tables(restore_point: dict) -> dict[str, dict]:
    [entry] = restore_point["databases"]
    return {f"{t['schema']}.{t['name']}": t for t in entry["tables"]}


def test_backup_records_rows_and_a_digest_per_table(restore_point):
    tables = _tables(restore_point)
    assert tables["app.orders"]["rows"] == 20000
    assert tables["app.orders"]["digest"].startswith("blake3:")
    # no key: its rows come back in any order, so its digest does not depend on it
    assert tables["app.events"]["digest"].startswith("rowsum-blake2b128:")
    assert all(t["digest"] for t in tables.values())
    assert restore_point["databases"][0]["time_zone"]


def test_digests_do_not_depend_on_which_reader_streamed_the_table(server, superuser, repo, restore_point,
                                                                 monkeypatch):
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)  # every table through a psql child
    through_psql = backup_postgres(repo, superuser, databases=[SOURCE], source_id="val-db", jobs=2)
    assert {k: t["digest"] for k, t in _tables(through_psql).items()} == \
        {k: t["digest"] for k, t in _tables(restore_point).items()}


def test_a_good_restore_passes(superuser, repo, restore_point, restored):
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert result["status"] == "passed", result["differences"]
    assert result["tables_checked"] == len(_tables(restore_point))
    assert result["row_counts_only"] is False


def _copy_text(server, restore_point, table: dict, order: str = "") -> bytes:
    """The table's rows as COPY writes them under the backup's pinned settings and time zone."""
    from rdsbackup.postgres.settings import data_session_settings, options_string

    columns = ", ".join(f'"{c}"' for c in table["columns"])
    settings = {**data_session_settings("UTF8"), "TimeZone": restore_point["databases"][0]["time_zone"]}
    return subprocess.run(
        [f"{server.bin_dir}/psql", "-X", "-q", "-h", server.host, "-p", str(server.port), "-U", server.superuser,
         "-d", SOURCE, "-c", f"COPY (SELECT {columns} FROM {table['schema']}.{table['name']}{order}) TO STDOUT"],
        env={**os.environ, "PGPASSWORD": server.password, "PGOPTIONS": options_string(settings)},
        capture_output=True, check=True).stdout


def test_the_ordered_digest_is_blake3_of_the_key_ordered_copy_text(server, restore_point):
    import blake3

    table = _tables(restore_point)["app.orders"]
    copy = _copy_text(server, restore_point, table, f" ORDER BY {', '.join(table['key_order'])}")
    assert copy.count(b"\n") == table["rows"]
    assert table["digest"] == "blake3:" + blake3.blake3(copy).hexdigest()


def test_the_unordered_digest_is_the_sum_of_each_rows_blake2b(server, restore_point):
    import hashlib

    table = _tables(restore_point)["app.events"]
    rows = _copy_text(server, restore_point, table).split(b"\n")[:-1]
    assert len(rows) == table["rows"]
    total = sum(int.from_bytes(hashlib.blake2b(row, digest_size=16).digest(), "big") for row in rows)
    assert table["digest"] == f"rowsum-blake2b128:{total % (1 << 128):032x}"


def test_a_restore_point_with_sha256_digests_still_validates(server, superuser, repo, restored, monkeypatch):
    # what backups recorded before BLAKE3: the validation re-digests with SHA-256
    monkeypatch.setattr(table_digest, "ORDERED", "sha256")
    older = backup_postgres(repo, superuser, databases=[SOURCE], source_id="val-db-sha256", jobs=2)
    monkeypatch.undo()
    assert _tables(older)["app.orders"]["digest"].startswith("sha256:")
    server.drop_database(restored)
    restore_postgres(repo, older["restore_point_id"], superuser, database=SOURCE, target_database=restored)
    result = validate_restore_point(repo, older["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert result["status"] == "passed", result["differences"]
    server.psql("SET session_replication_role = replica; UPDATE app.orders SET note = 'changed' WHERE id = 4242",
                dbname=restored)
    result = validate_restore_point(repo, older["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert [d["table"] for d in result["differences"]] == ["app.orders"]


def test_a_row_changed_after_the_backup_fails_naming_the_table(server, superuser, repo, restore_point, restored):
    # (triggers off: the audit trigger would add a row of its own)
    server.psql("SET session_replication_role = replica; UPDATE app.orders SET note = 'changed' WHERE id = 4242",
                dbname=restored)
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert result["status"] == "failed"
    assert result["differences"] == [{"database": restored, "table": "app.orders",
                                      "reason": "same row count, different data (digest differs)"}]


def test_a_missing_row_of_a_keyless_table_is_named_with_the_counts(server, superuser, repo, restore_point, restored):
    server.psql("DELETE FROM app.events WHERE note = 'e17'", dbname=restored)
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    [difference] = result["differences"]
    assert difference["table"] == "app.events" and difference["reason"] == "4999 rows, the restore point recorded 5000"


def test_keyless_rows_in_another_physical_order_still_pass(server, superuser, repo, restore_point, restored):
    # the first rows moved to the end of the heap, as a parallel or partial load would leave them
    server.psql("WITH moved AS (DELETE FROM app.events WHERE note IN ('e1', 'e2') RETURNING *) "
                "INSERT INTO app.events SELECT * FROM moved", dbname=restored)
    first = server.execute("SELECT note FROM app.events LIMIT 1", dbname=restored)[0][0]
    assert first != "e1"
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert result["status"] == "passed", result["differences"]


def test_a_server_time_zone_other_than_the_backups_does_not_matter(server, superuser, repo, restore_point, restored):
    zone = "Asia/Tokyo" if restore_point["databases"][0]["time_zone"] != "Asia/Tokyo" else "America/Lima"
    server.psql(f"ALTER DATABASE {restored} SET TimeZone = '{zone}'")
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database=restored)
    assert result["status"] == "passed", result["differences"]


def test_a_missing_database_is_named(superuser, repo, restore_point):
    result = validate_restore_point(repo, restore_point["restore_point_id"], superuser, database=SOURCE,
                                    target_database="no_such_restore")
    assert result["differences"] == [{"database": "no_such_restore", "table": None, "reason": "database is missing"}]


def test_snapshot_check_runs_amcheck_and_finds_a_missing_database(server, superuser, restore_point, restored):
    result = check_server(superuser, databases=[restored, "not_there"])
    assert result["status"] == "failed" and result["problems"] == ["database 'not_there' is missing"]
    [checked] = [d for d in result["databases"] if d["database"] == restored]
    assert checked["amcheck"]["ran"] and checked["amcheck"]["indexes"] > 5 and checked["amcheck"]["failed"] == []
    # the extension was created for the check only: the database is left as it was
    assert server.execute("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'", dbname=restored) == [(0,)]
    ok = check_server(superuser, databases=[restored], recorded=None)
    assert ok["status"] == "passed"


def test_cli_exits_1_and_names_the_altered_table(server, repo_url, restore_point, restored):
    server.psql("UPDATE app.customers SET name = 'mallory' WHERE id = 7", dbname=restored)
    env = dict(os.environ, RDSBACKUP_PASSWORD=PASSPHRASE, VAL_DB_PASSWORD=server.password)
    result = subprocess.run(
        [shutil.which("rdsbackup"), "validate", "postgres", "--repo", repo_url, "--restore-point",
         restore_point["restore_point_id"], "--host", server.host, "--port", str(server.port), "--user",
         server.superuser, "--password-env", "VAL_DB_PASSWORD", "--database", SOURCE,
         "--target-database", restored, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["status"] == "failed"
    assert result.stderr.strip() == (f"validation failed: database {restored}, table app.customers: "
                                     "same row count, different data (digest differs)")
