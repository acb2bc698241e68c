"""PostgreSQL backup and restore against a real server and a real (file://) repository."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, TargetNotEmpty, backup_postgres, restore_postgres
from rdsbackup.postgres.errors import DatabaseNotFound, RestoreFailed
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

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(postgres_server):
    ensure_role(postgres_server, SAMPLE_ROLE)
    for name in ("shop", "crm"):
        postgres_server.drop_database(name)
    create_sample_database(postgres_server, "shop")
    postgres_server.create_database("crm")
    postgres_server.psql("CREATE TABLE contacts (id int PRIMARY KEY, name text);"
                         "INSERT INTO contacts SELECT i, 'n' || i FROM generate_series(1, 50) i;", dbname="crm")
    return postgres_server


@pytest.fixture(scope="module")
def superuser(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    url = f"file://{tmp_path_factory.mktemp('repo')}"
    Repository.init(url, password=PASSPHRASE)
    return Repository.open(url, password=PASSPHRASE)


@pytest.fixture(scope="module")
def full_backup(server, superuser, repo) -> dict:
    return backup_postgres(repo, superuser, databases=["shop", "crm"], source_id="orders-db", jobs=3)


def _assert_same_database(server, source: str, copy: str) -> None:
    assert schema_dump(server, copy) == schema_dump(server, source)
    assert table_checksums(server, copy) == table_checksums(server, source)
    assert sequence_values(server, copy) == sequence_values(server, source)
    assert large_objects(server, copy) == large_objects(server, source)
    assert database_properties(server, copy) == database_properties(server, source)


def test_restore_point_records_source_version_databases_and_sizes(full_backup, repo):
    assert full_backup["restore_point_id"]
    assert full_backup["source_id"] == "orders-db"
    assert full_backup["engine"] == "postgres"
    assert full_backup["server_version"].startswith("15")
    assert full_backup["started"] <= full_backup["ended"]
    assert [d["name"] for d in full_backup["databases"]] == ["shop", "crm"]
    shop = full_backup["databases"][0]
    tables = {(t["schema"], t["name"]): t for t in shop["tables"]}
    # Leaf partitions carry the rows; the partitioned parent has none of its own.
    assert ("app", "measurements_2024") in tables and ("app", "measurements") not in tables
    assert tables[("app", "orders")]["rows"] == 20000
    assert tables[("app", "orders")]["order"] == "primary-key"
    assert tables[("app", "events")]["order"] == "physical"
    # A table of one page is streamed as it lies (nothing to gain from sorting it), and says so.
    assert tables[("app", "base")]["order"] == "physical" and tables[("app", "base")]["key"] == ["id"]
    assert tables[("app", "orders")]["bytes"] > 0
    assert shop["large_objects"] is not None
    points = repo.list_restore_points()
    assert full_backup["restore_point_id"] in [p.get("id", p.get("restore_point_id")) for p in points]


def test_table_rows_are_stored_in_primary_key_order(full_backup, repo):
    shop = full_backup["databases"][0]
    orders = next(t for t in shop["tables"] if t["name"] == "orders")
    data = b"".join(repo.open_stream(orders["stream"]))
    ids = [int(line.split(b"\t", 1)[0]) for line in data.splitlines()]
    assert ids == sorted(ids) and len(ids) == 20000


def test_restored_database_equals_source(server, superuser, repo, full_backup):
    server.drop_database("shop_copy")
    result = restore_postgres(repo, full_backup["restore_point_id"], superuser, database="shop",
                              target_database="shop_copy", jobs=3)
    assert result["databases"][0]["target"] == "shop_copy"
    settings, comment, acl, _owner = database_properties(server, "shop_copy")[0]
    assert comment == "the shop" and "app_reader=c/" in acl and 'search_path=app, public, "$user"' in settings
    _assert_same_database(server, "shop", "shop_copy")


def test_triggers_fire_and_sequences_continue_after_restore(server, superuser, repo, full_backup):
    server.drop_database("shop_live")
    restore_postgres(repo, full_backup["restore_point_id"], superuser, database="shop",
                     target_database="shop_live")
    probe = ("INSERT INTO app.orders (customer_id, total) VALUES (1, 9.99) RETURNING id;")
    audits_before = server.execute("SELECT count(*) FROM app.audit", dbname="shop_live")[0][0]
    new_id = server.execute(probe, dbname="shop_live")[0][0]
    assert new_id == 20001  # the identity continues where the source was
    assert server.execute("SELECT count(*) FROM app.audit", dbname="shop_live")[0][0] == audits_before + 1
    assert server.execute("SELECT nextval('app.ticket_seq')", dbname="shop_live")[0][0] == 1000 + 7 * 5
    assert server.execute("SELECT count(*) FROM app.order_counts", dbname="shop_live")[0][0] == 3
    server.execute("CALL app.mark_paid(20001)", dbname="shop_live")
    assert server.execute("SELECT status::text FROM app.orders WHERE id = 20001", dbname="shop_live") == [("paid",)]


def test_whole_restore_point_restores_every_database_under_its_name(server, superuser, repo, full_backup,
                                                                     tmp_path_factory):
    # The restore point's databases exist on this server: restore to a second restore of "crm" only.
    with pytest.raises(TargetNotEmpty, match=r"already exists on .* and is not empty .*--replace"):
        restore_postgres(repo, full_backup["restore_point_id"], superuser)
    server.psql("INSERT INTO contacts VALUES (51, 'after backup')", dbname="crm")
    restore_postgres(repo, full_backup["restore_point_id"], superuser, database="crm", replace=True)
    assert server.execute("SELECT count(*) FROM contacts", dbname="crm")[0][0] == 50


def test_restore_into_existing_empty_database(server, superuser, repo, full_backup):
    server.drop_database("crm_empty")
    server.create_database("crm_empty")
    restore_postgres(repo, full_backup["restore_point_id"], superuser, database="crm", target_database="crm_empty")
    assert server.execute("SELECT count(*) FROM contacts", dbname="crm_empty")[0][0] == 50


def test_restore_of_a_database_the_restore_point_lacks_names_both(superuser, repo, full_backup):
    rp = full_backup["restore_point_id"]
    with pytest.raises(DatabaseNotFound, match=f"restore point {rp} has no database 'nope'"):
        restore_postgres(repo, rp, superuser, database="nope")
    with pytest.raises(RestoreFailed, match="--target-database needs --database"):
        restore_postgres(repo, rp, superuser, target_database="x")


def test_include_globals_recreates_roles_and_memberships(server, superuser, repo):
    ensure_role(server, "globals_probe", "NOLOGIN CONNECTION LIMIT 5")
    server.execute(f"GRANT {SAMPLE_ROLE} TO globals_probe")
    backup = backup_postgres(repo, superuser, databases=["crm"], source_id="globals")
    server.execute("DROP ROLE globals_probe")
    server.drop_database("crm_globals")
    result = restore_postgres(repo, backup["restore_point_id"], superuser, database="crm",
                              target_database="crm_globals", include_globals=True)
    assert result["warnings"] == []
    assert server.execute("SELECT rolconnlimit, rolcanlogin FROM pg_roles WHERE rolname = 'globals_probe'") == [
        (5, False)]
    assert server.execute(f"SELECT pg_has_role('globals_probe', '{SAMPLE_ROLE}', 'MEMBER')") == [(True,)]


def test_incremental_backup_after_small_changes_stores_little(server, superuser, repo):
    server.drop_database("shop_incr")
    create_sample_database(server, "shop_incr")
    first = backup_postgres(repo, superuser, databases=["shop_incr"], source_id="incremental")
    server.psql(
        "UPDATE app.orders SET note = 'changed' WHERE id % 500 = 0;"
        "DELETE FROM app.events WHERE (payload->>'i')::int % 1000 = 0;"
        "INSERT INTO app.customers (name) VALUES ('new customer');", dbname="shop_incr")
    second = backup_postgres(repo, superuser, databases=["shop_incr"], source_id="incremental")
    assert second["restore_point_id"] != first["restore_point_id"]
    assert second["new_bytes"] < 0.15 * second["bytes"], (second["new_bytes"], second["bytes"])
    server.drop_database("shop_second")
    restore_postgres(repo, second["restore_point_id"], superuser, database="shop_incr",
                     target_database="shop_second")
    _assert_same_database(server, "shop_incr", "shop_second")


def test_large_tables_load_in_parts_side_by_side_and_restore_equal(server, superuser, repo, full_backup,
                                                                   monkeypatch):
    import rdsbackup.postgres.restore as restore_module

    monkeypatch.setattr(restore_module, "PART_BYTES", 64 * 1024)  # the sample's orders are ~1.5 MiB
    planned: list = []
    plan = restore_module.load_plan
    monkeypatch.setattr(restore_module, "load_plan", lambda tables, jobs: planned.extend(plan(tables, jobs)) or planned)
    server.drop_database("shop_parts")
    result = restore_postgres(repo, full_backup["restore_point_id"], superuser, database="shop",
                              target_database="shop_parts", jobs=3)
    orders_parts = [part for table, part in planned if table["name"] == "orders"]
    assert orders_parts == [(0, 3), (1, 3), (2, 3)]
    shop = full_backup["databases"][0]
    assert result["databases"][0]["rows"] == sum(t["rows"] for t in shop["tables"])
    _assert_same_database(server, "shop", "shop_parts")


def test_load_plan_splits_only_large_tables_and_puts_the_largest_sessions_first():
    from rdsbackup.postgres.restore import PART_BYTES, load_plan

    big = {"name": "big", "bytes": 10 * PART_BYTES}
    mid = {"name": "mid", "bytes": 2 * PART_BYTES + 5}
    small = {"name": "small", "bytes": PART_BYTES - 1}
    plan = load_plan([small, mid, big], jobs=4)
    assert [(t["name"], part) for t, part in plan] == [
        ("big", (0, 4)), ("big", (1, 4)), ("big", (2, 4)), ("big", (3, 4)),
        ("mid", (0, 2)), ("mid", (1, 2)), ("small", None)]
    assert [(t["name"], part) for t, part in load_plan([big, small], jobs=1)] == [("big", None), ("small", None)]


def test_restore_sessions_get_the_maintenance_work_mem_asked_for(superuser, tmp_path):
    from rdsbackup.postgres.tools import run_tool_unchecked

    out = tmp_path / "show.txt"
    with open(out, "wb") as f:
        code, _ = run_tool_unchecked("psql", ["-X", "-At", "-c", "SHOW maintenance_work_mem"], superuser,
                                     dbname="postgres", stdout=f, settings={"maintenance_work_mem": "300MB"})
    assert code == 0 and out.read_text().strip() == "300MB"


def test_a_maintenance_work_mem_that_is_not_a_size_is_refused_before_anything_changes(server, superuser, repo,
                                                                                       full_backup):
    server.drop_database("shop_mwm")
    with pytest.raises(RestoreFailed, match="'lots' is not a PostgreSQL memory size"):
        restore_postgres(repo, full_backup["restore_point_id"], superuser, database="shop",
                         target_database="shop_mwm", maintenance_work_mem="lots")
    assert not server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop_mwm'")



@pytest.fixture(scope="module")
def vacuum_backup(server, superuser, repo) -> str:
    """A database with a plain table and tables with their own storage settings; its restore point."""
    server.drop_database("vac_src")
    server.create_database("vac_src")
    server.psql("CREATE TABLE plain (id int PRIMARY KEY, v text);"
                "CREATE TABLE own_setting (id int PRIMARY KEY) WITH (autovacuum_enabled = false, fillfactor = 90);"
                "CREATE TABLE tuned (id int PRIMARY KEY) WITH (autovacuum_vacuum_scale_factor = 0.05);"
                "INSERT INTO plain SELECT i, 'v' || i FROM generate_series(1, 1000) i;"
                "INSERT INTO own_setting SELECT generate_series(1, 10);"
                "INSERT INTO tuned SELECT generate_series(1, 10);", dbname="vac_src")
    return backup_postgres(repo, superuser, databases=["vac_src"], source_id="vac")["restore_point_id"]


def _reloptions(server, dbname: str) -> dict:
    return dict(server.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                               "('plain', 'own_setting', 'tuned')", dbname=dbname))


def test_autovacuum_waits_until_indexes_and_constraints_exist_then_tables_are_as_dumped(
        server, superuser, repo, vacuum_backup, monkeypatch):
    import rdsbackup.postgres.autovacuum as autovacuum_module
    import rdsbackup.postgres.restore as restore_module

    server.drop_database("vac_copy")
    monkeypatch.setattr(autovacuum_module, "PAUSE_MIN_BYTES", 0)
    during: dict = {}
    pg_restore = restore_module._pg_restore

    def spy(info, target, path, sections, *args, **kw):
        if "post-data" in sections:
            during.update(_reloptions(server, target))
        return pg_restore(info, target, path, sections, *args, **kw)

    monkeypatch.setattr(restore_module, "_pg_restore", spy)
    restore_postgres(repo, vacuum_backup, superuser, database="vac_src", target_database="vac_copy")
    assert during == {"plain": ["autovacuum_enabled=false"],
                      "own_setting": ["autovacuum_enabled=false", "fillfactor=90"],
                      "tuned": ["autovacuum_vacuum_scale_factor=0.05", "autovacuum_enabled=false"]}
    assert _reloptions(server, "vac_copy") == {"plain": None,
                                               "own_setting": ["autovacuum_enabled=false", "fillfactor=90"],
                                               "tuned": ["autovacuum_vacuum_scale_factor=0.05"]}
    _assert_same_database(server, "vac_src", "vac_copy")


def test_autovacuum_is_given_back_when_a_restore_into_an_existing_database_fails(
        server, superuser, repo, vacuum_backup, monkeypatch):
    import rdsbackup.postgres.autovacuum as autovacuum_module
    import rdsbackup.postgres.restore as restore_module

    server.drop_database("vac_keep")
    server.create_database("vac_keep")  # exists and is empty: a failed restore leaves it in place
    monkeypatch.setattr(autovacuum_module, "PAUSE_MIN_BYTES", 0)
    pg_restore = restore_module._pg_restore

    def failing(info, target, path, sections, *args, **kw):
        if "post-data" in sections:
            raise RestoreFailed("post-data failed (injected)")
        return pg_restore(info, target, path, sections, *args, **kw)

    monkeypatch.setattr(restore_module, "_pg_restore", failing)
    with pytest.raises(RestoreFailed, match="injected"):
        restore_postgres(repo, vacuum_backup, superuser, database="vac_src", target_database="vac_keep")
    assert _reloptions(server, "vac_keep")["plain"] is None
