"""Backup and restore as a role like RDS's master user: not a superuser; CREATEDB, CREATEROLE, owner of
its databases."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
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
