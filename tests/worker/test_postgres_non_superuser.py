"""Backup and restore as a role like RDS's master user: not a superuser; CREATEDB, CREATEROLE, owner of
its databases. Tables with FORCE ROW LEVEL SECURITY restored by their owner, next to pg_restore."""

from __future__ import annotations

import os
import subprocess

import pytest
from rdsbackup.postgres import BackupFailed, ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.postgres_server import (
    SAMPLE_ROLE,
    create_sample_database,
    database_properties,
    ensure_role,
    large_objects,
    schema_dump,
    sequence_values,
    shared_server,
    table_checksums,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_server():
    return shared_server()

MASTER = "rds_master"
MASTER_PASSWORD = "master-password"


@pytest.fixture(scope="module")
def master(postgres_server) -> ConnectionInfo:
    ensure_role(postgres_server, MASTER, f"LOGIN CREATEDB CREATEROLE PASSWORD '{MASTER_PASSWORD}'")
    for name in ("owned", "owned_copy"):
        postgres_server.drop_database(name)
    ensure_role(postgres_server, SAMPLE_ROLE)
    # The master made the grantee role itself, as on RDS (CREATEROLE gives it admin of that role).
    postgres_server.execute(f"GRANT {SAMPLE_ROLE} TO {MASTER} WITH ADMIN OPTION")
    create_sample_database(postgres_server, "owned", user=MASTER, password=MASTER_PASSWORD)
    return ConnectionInfo(postgres_server.host, postgres_server.port, MASTER, MASTER_PASSWORD)


def test_master_user_backs_up_and_restores_its_databases(postgres_server, master, tmp_path):
    url = f"file://{tmp_path / 'repo'}"
    Repository.init(url, password="pw")
    repo = Repository.open(url, password="pw")
    assert postgres_server.execute(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{MASTER}'") == [(False,)]

    backup = backup_postgres(repo, master, databases=["owned"], source_id="rds")
    assert backup["globals"] is not None, backup["warnings"]
    result = restore_postgres(repo, backup["restore_point_id"], master, database="owned",
                              target_database="owned_copy", include_globals=True)

    assert result["warnings"] == []
    assert postgres_server.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'owned_copy'"
                                   ) == [(MASTER,)]
    assert schema_dump(postgres_server, "owned_copy") == schema_dump(postgres_server, "owned")
    assert table_checksums(postgres_server, "owned_copy") == table_checksums(postgres_server, "owned")
    assert sequence_values(postgres_server, "owned_copy") == sequence_values(postgres_server, "owned")
    assert large_objects(postgres_server, "owned_copy") == large_objects(postgres_server, "owned")
    assert database_properties(postgres_server, "owned_copy") == database_properties(postgres_server, "owned")


FORCED_SQL = f"""
CREATE TABLE accounts (id int PRIMARY KEY, holder text NOT NULL);
INSERT INTO accounts VALUES (1, 'alice'), (2, 'bob'), (3, '{MASTER}');
CREATE TABLE payments (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts);
INSERT INTO payments VALUES (1, 1), (2, 2), (3, 3);
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON accounts USING (holder = current_user);
CREATE MATERIALIZED VIEW visible_accounts AS SELECT count(*) AS n FROM accounts;
"""


def test_force_row_level_security_restored_by_its_owner(postgres_server, master, tmp_path):
    """A FORCE ROW LEVEL SECURITY table owned by the restoring role (RDS's master user): its policies
    apply to that role. pg_restore (row_security off) fails the materialized view's refresh and, with
    --jobs, may enable the policies before a foreign key is checked against the table; ours restores
    every row, validates the key, and refreshes the view as a REFRESH in the source does."""
    for name in ("forced", "forced_ours", "forced_control"):
        postgres_server.drop_database(name)
    postgres_server.execute(f"CREATE DATABASE forced OWNER {MASTER}")
    postgres_server.psql(FORCED_SQL, dbname="forced", user=MASTER, password=MASTER_PASSWORD)
    url = f"file://{tmp_path / 'repo'}"
    repo = Repository.init(url, password="pw")
    superuser = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser,
                               postgres_server.password)
    # Read by its owner the table shows one row: a backup by the owner fails, as pg_dump does (below,
    # run by a superuser, which no policy restricts).
    with pytest.raises(BackupFailed, match=r"table public\.accounts: query would be affected by row-level security"):
        backup_postgres(repo, master, databases=["forced"])
    backup = backup_postgres(repo, superuser, databases=["forced"])

    result = restore_postgres(repo, backup["restore_point_id"], master, database="forced",
                              target_database="forced_ours", jobs=2)

    dump = str(tmp_path / "control.dump")
    env = dict(os.environ, PGPASSWORD=postgres_server.password)
    subprocess.run([f"{postgres_server.bin_dir}/pg_dump", "-Fc", "-h", postgres_server.host, "-p",
                    str(postgres_server.port), "-U", postgres_server.superuser, "-f", dump, "forced"],
                   env=env, check=True)
    postgres_server.psql("CREATE DATABASE forced_control", user=MASTER, password=MASTER_PASSWORD)
    control = subprocess.run([f"{postgres_server.bin_dir}/pg_restore", "-h", postgres_server.host, "-p",
                              str(postgres_server.port), "-U", MASTER, "-d", "forced_control", dump],
                             env=dict(env, PGPASSWORD=MASTER_PASSWORD), capture_output=True, text=True)
    assert "query would be affected by row-level security policy" in control.stderr
    populated = "SELECT relispopulated FROM pg_class WHERE relname = 'visible_accounts'"
    assert postgres_server.execute(populated, dbname="forced_control") == [(False,)]

    assert result["warnings"] == []
    assert schema_dump(postgres_server, "forced_ours") == schema_dump(postgres_server, "forced")
    assert table_checksums(postgres_server, "forced_ours") == table_checksums(postgres_server, "forced")
    assert postgres_server.execute(populated, dbname="forced_ours") == [(True,)]
    # the view holds what its owner's REFRESH sees, in the source and in the copy
    view = "SELECT n FROM visible_accounts"
    assert postgres_server.execute(view, dbname="forced_ours") == [(1,)]
    assert postgres_server.execute(view, dbname="forced") == [(1,)]

    # --replace verifies the copy by reading every row: FORCE is lifted for that, and set again
    replaced = restore_postgres(repo, backup["restore_point_id"], master, database="forced",
                                target_database="forced_ours", replace=True)
    assert replaced["warnings"] == []
    assert schema_dump(postgres_server, "forced_ours") == schema_dump(postgres_server, "forced")
    assert table_checksums(postgres_server, "forced_ours") == table_checksums(postgres_server, "forced")
    for name in ("forced", "forced_ours", "forced_control"):
        postgres_server.drop_database(name)
