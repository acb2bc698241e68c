"""Security labels round-trip as pg_dump/pg_restore keep them: on the database itself (what pg_dump
writes only with --create), on schema objects and columns, and on large objects (our own stream).
Into a server that does not load the label's provider, the restore fails naming the label, as
pg_restore reports it, and leaves no half-restored database."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.postgres.errors import RestoreFailed
from rdsbackup.repository import Repository

from tests.support.label_provider import PROVIDER, label_provider_settings
from tests.support.postgres_server import find_server_bin, running_server, shared_server

pytestmark = pytest.mark.postgres

LABELS_SQL = """
SELECT pg_describe_object(classoid, objoid, objsubid), provider, label FROM pg_seclabel
UNION ALL
SELECT 'this database', provider, label FROM pg_shseclabel
WHERE classoid = 'pg_database'::regclass AND objoid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _labels(server, dbname: str) -> set[tuple]:
    return set(server.execute(LABELS_SQL, dbname=dbname))


@pytest.fixture(scope="module")
def labelled():
    """A server that loads the test label provider, holding a database with labels of every kind."""
    with running_server(settings=label_provider_settings(find_server_bin())) as server:
        server.psql(f"""
            CREATE DATABASE labelled;
            SECURITY LABEL FOR {PROVIDER} ON DATABASE labelled IS 'internal';
        """)
        server.psql(f"""
            CREATE TABLE t (id int PRIMARY KEY, secret text);
            INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 10) i;
            SECURITY LABEL FOR {PROVIDER} ON TABLE t IS 'secret';
            SECURITY LABEL FOR {PROVIDER} ON COLUMN t.secret IS 'secret';
            SELECT lo_from_bytea(9001, 'labelled bytes');
            SECURITY LABEL FOR {PROVIDER} ON LARGE OBJECT 9001 IS 'internal';
            SELECT lo_from_bytea(9002, 'plain bytes');
        """, dbname="labelled")
        yield server


def _backup(server, tmp_path) -> tuple[Repository, str]:
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    return repo, backup_postgres(repo, info, databases=["labelled"])["restore_point_id"]


def test_labels_on_the_database_objects_columns_and_large_objects_round_trip(labelled, tmp_path):
    repo, point = _backup(labelled, tmp_path)
    info = ConnectionInfo(labelled.host, labelled.port, labelled.superuser, labelled.password)
    result = restore_postgres(repo, point, info, database="labelled", target_database="labelled_copy")
    assert result["warnings"] == []
    source = _labels(labelled, "labelled")
    assert {obj for obj, _, _ in source} == {"this database", "table t", "column secret of table t",
                                             "large object 9001"}
    assert _labels(labelled, "labelled_copy") == source


def test_a_label_the_target_cannot_apply_fails_the_restore_naming_it_and_leaves_no_database(labelled, tmp_path):
    """As pg_restore fails it: a label dropped on the way could unmask what it protects (a masking
    rule of PostgreSQL Anonymizer is a security label)."""
    repo, point = _backup(labelled, tmp_path)
    target = shared_server()
    target.drop_database("labelled_elsewhere")
    info = ConnectionInfo(target.host, target.port, target.superuser, target.password)
    with pytest.raises(RestoreFailed, match=f'"{PROVIDER}" is not loaded.*SECURITY LABEL FOR {PROVIDER} ON TABLE'):
        restore_postgres(repo, point, info, database="labelled", target_database="labelled_elsewhere")
    assert target.execute("SELECT 1 FROM pg_database WHERE datname = 'labelled_elsewhere'") == []


@pytest.mark.parametrize("where", ["database", "large object"])
def test_the_database_s_own_label_and_a_large_object_s_label_fail_alike(where, tmp_path):
    with running_server(settings=label_provider_settings(find_server_bin())) as source:
        source.psql("CREATE DATABASE labelled;")
        if where == "database":
            source.psql(f"SECURITY LABEL FOR {PROVIDER} ON DATABASE labelled IS 'internal'")
        else:
            source.psql(f"SELECT lo_from_bytea(9001, 'x');"
                        f" SECURITY LABEL FOR {PROVIDER} ON LARGE OBJECT 9001 IS 'secret'", dbname="labelled")
        repo, point = _backup(source, tmp_path)
    target = shared_server()
    target.drop_database("labelled_elsewhere")
    info = ConnectionInfo(target.host, target.port, target.superuser, target.password)
    expected = 'ON DATABASE "labelled_elsewhere"' if where == "database" else "ON LARGE OBJECT 9001"
    with pytest.raises(RestoreFailed, match=f'SECURITY LABEL FOR "{PROVIDER}" {expected} IS .* is not loaded'):
        restore_postgres(repo, point, info, database="labelled", target_database="labelled_elsewhere")
    assert target.execute("SELECT 1 FROM pg_database WHERE datname = 'labelled_elsewhere'") == []


def test_no_security_labels_restores_into_a_server_without_the_provider_through_the_cli(labelled, tmp_path):
    """`rdsbackup restore postgres --no-security-labels`, as `pg_restore --no-security-labels`: every
    label left out (object, column, large object, the database's own), everything else restored."""
    repo, point = _backup(labelled, tmp_path)
    target = shared_server()
    target.drop_database("labelled_unlabelled")
    env = dict(os.environ, RDSBACKUP_PASSWORD="pw", TARGET_PW=target.password)
    try:
        done = subprocess.run(
            ["rdsbackup", "restore", "postgres", "--repo", repo.backend.url, "--restore-point", point,
             "--host", target.host, "--port", str(target.port), "--user", target.superuser,
             "--password-env", "TARGET_PW", "--database", "labelled", "--target-database", "labelled_unlabelled",
             "--no-security-labels", "--json"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["warnings"] == []
        assert _labels(target, "labelled_unlabelled") == set()
        assert target.execute("SELECT count(*) FROM t", dbname="labelled_unlabelled") == [(10,)]
        assert target.execute("SELECT lo_get(9001)", dbname="labelled_unlabelled") == [(b"labelled bytes",)]
    finally:
        target.drop_database("labelled_unlabelled")
