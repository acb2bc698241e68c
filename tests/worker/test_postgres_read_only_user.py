"""Backup as a read-only user (docs/security.md, "Optional least-privilege database users"): a login
role that is no superuser and owns nothing, with only `pg_read_all_data` (read every table, view and
sequence, USAGE on every schema), `pg_read_all_settings`, CONNECT on the database and BYPASSRLS (the
sample database has a table under row-level security, which pg_dump reads with row_security off).
The restore point restores equal, as the superuser's would."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.postgres_server import (
    SAMPLE_ROLE,
    create_sample_database,
    ensure_role,
    large_objects,
    schema_dump,
    sequence_values,
    shared_server,
    table_checksums,
)

pytestmark = pytest.mark.postgres

READER = "backup_reader"
READER_PASSWORD = "reader-password"
SOURCE, COPY = "read_only_source", "read_only_copy"


# as docs/security.md says: pg_read_all_data does not reach large objects
GRANT_LARGE_OBJECTS = f"""
DO $$ DECLARE lo oid; BEGIN
  FOR lo IN SELECT oid FROM pg_largeobject_metadata LOOP
    EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO {READER}', lo);
  END LOOP;
END $$;
"""


@pytest.fixture(scope="module")
def postgres_server():
    return shared_server()


@pytest.fixture(scope="module")
def reader(postgres_server) -> ConnectionInfo:
    if postgres_server.execute("SHOW server_version_num")[0][0] < "140000":
        pytest.skip("pg_read_all_data needs PostgreSQL 14")
    ensure_role(postgres_server, READER, f"LOGIN BYPASSRLS PASSWORD '{READER_PASSWORD}'")
    postgres_server.execute(f"GRANT pg_read_all_data, pg_read_all_settings TO {READER}")
    ensure_role(postgres_server, SAMPLE_ROLE)
    for name in (SOURCE, COPY):
        postgres_server.drop_database(name)
    create_sample_database(postgres_server, SOURCE)
    postgres_server.execute(f'GRANT CONNECT ON DATABASE "{SOURCE}" TO {READER}')
    postgres_server.psql(GRANT_LARGE_OBJECTS, dbname=SOURCE)
    yield ConnectionInfo(postgres_server.host, postgres_server.port, READER, READER_PASSWORD)
    for name in (SOURCE, COPY):
        postgres_server.drop_database(name)


def test_a_read_only_user_backs_up_and_the_point_restores_equal(postgres_server, reader, tmp_path):
    assert postgres_server.execute(
        f"SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{READER}'") == [
        (False, False, False)]
    url = f"file://{tmp_path / 'repo'}"
    repo = Repository.init(url, password="pw")

    backup = backup_postgres(repo, reader, databases=[SOURCE], source_id="read-only")

    superuser = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser,
                               postgres_server.password)
    restore_postgres(repo, backup["restore_point_id"], superuser, database=SOURCE, target_database=COPY)
    assert schema_dump(postgres_server, COPY) == schema_dump(postgres_server, SOURCE)
    assert table_checksums(postgres_server, COPY) == table_checksums(postgres_server, SOURCE)
    assert sequence_values(postgres_server, COPY) == sequence_values(postgres_server, SOURCE)
    assert large_objects(postgres_server, COPY) == large_objects(postgres_server, SOURCE)
