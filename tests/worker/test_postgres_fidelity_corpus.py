"""The fidelity corpus (tests/support/fidelity_corpus.sql + every table shape + every built-in type)
on a source server whose session defaults differ from the target's (DateStyle, IntervalStyle,
extra_float_digits, TimeZone; an ICU database), backed up while another session moves money between
accounts and replaces a table with TRUNCATE, then restored on the target server. Compared with the
source: `pg_dump -s --create` entry by entry, every table's rows, sequences, large objects, security
labels (both servers load a test label provider: tests/support/label_provider.py) and database
properties. The same comparison is made for `pg_dump -Fc | pg_restore` (the control): a
difference both share is printed as such, and ours may have no difference the control has not.
Then the corpus without its superuser-only part is restored by a role like RDS's master user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.label_provider import label_provider_settings
from tests.support.pg_types import TABLE_SHAPES_SQL, all_types_table_sql
from tests.support.postgres_server import (
    create_tablespace,
    ensure_role,
    find_server_bin,
    running_server,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

with open(os.path.join(os.path.dirname(__file__), "..", "support", "fidelity_corpus.sql")) as _f:
    CORPUS_SQL = _f.read()
SUPERUSER_MARK = "-- @superuser-only"
ROLES = ("corpus_owner", "corpus_reader", "corpus_writer")
SOURCE_DEFAULTS = {"datestyle": "SQL, DMY", "intervalstyle": "sql_standard", "extra_float_digits": "-2",
                   "TimeZone": "Asia/Kolkata", "bytea_output": "escape"}
# Tables another session changes during the backups: compared by their invariants, not row by row.
BUSY = {"app.accounts", "app.replaced"}
RESTORER, RESTORER_PASSWORD = "corpus_restorer", "restorer-pw"
# On both servers, as a restore target must have it for objects to go back into it.
TABLESPACE = "corpus_ts"

PINNED = ("SET datestyle = ISO", "SET intervalstyle = postgres", "SET extra_float_digits = 3",
          "SET TimeZone = UTC", "SET bytea_output = hex", "SET lc_monetary = 'C'", "SET client_encoding = UTF8")


def _connect(server, dbname: str):
    conn = server.connect(dbname)
    for stmt in PINNED:
        conn.execute(stmt)
    return conn


def _create_source(server, dbname: str, sql_text: str) -> None:
    server.psql(f"""
        CREATE DATABASE {dbname} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'sv-SE'
            LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 50;
        ALTER DATABASE {dbname} SET search_path = app, public;
        ALTER DATABASE {dbname} SET default_text_search_config = 'pg_catalog.simple';
        ALTER ROLE corpus_reader IN DATABASE {dbname} SET work_mem = '3MB';
        GRANT CONNECT, TEMPORARY ON DATABASE {dbname} TO corpus_reader WITH GRANT OPTION;
        COMMENT ON DATABASE {dbname} IS 'the corpus';
        SECURITY LABEL FOR rdsbackup_test ON DATABASE {dbname} IS 'internal';
    """)
    server.psql(sql_text + TABLE_SHAPES_SQL + all_types_table_sql("s.all_types"), dbname=dbname)


@pytest.fixture(scope="module")
def source():
    location = None
    try:
        with running_server(settings={**SOURCE_DEFAULTS, **label_provider_settings(find_server_bin())}) as server:
            for role in ROLES:
                ensure_role(server, role)
            location = create_tablespace(server, TABLESPACE)
            _create_source(server, "corpus_src", CORPUS_SQL)
            _create_source(server, "corpus_rds", CORPUS_SQL.split(SUPERUSER_MARK)[0])
            yield server
    finally:
        if location:
            shutil.rmtree(location, ignore_errors=True)  # the server that used it has stopped


@pytest.fixture(scope="module")
def target():
    """The restore target: its own server, with the label provider loaded (as the source's) so that
    security labels can be restored; the server's defaults are PostgreSQL's, unlike the source's."""
    location = None
    try:
        with running_server(settings=label_provider_settings(find_server_bin())) as server:
            location = create_tablespace(server, TABLESPACE)
            yield server
    finally:
        if location:
            shutil.rmtree(location, ignore_errors=True)


# --- what is compared ------------------------------------------------------------------------------------

_ENTRY = re.compile(r"^--\n-- (?:Name|Data for Name): (.*?)\n--\n", re.M)


def schema_entries(server, dbname: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
    """`pg_dump -s --create`, one entry per object (keyed by its header), the database named X."""
    env = dict(os.environ, PGPASSWORD=server.password if password is None else password)
    out = subprocess.run([f"{server.bin_dir}/pg_dump", "-s", "--create", "-h", server.host, "-p", str(server.port),
                          "-U", user or server.superuser, "-d", dbname],
                         capture_output=True, text=True, env=env, check=True).stdout
    out = "\n".join(ln for ln in out.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict")))
    out = re.sub(rf'\b{re.escape(dbname)}\b', "X", out)
    parts = _ENTRY.split(out)
    entries = {}
    for i in range(1, len(parts) - 1, 2):
        # Keyed by the object; its owner goes with its text (a restore by another role changes it).
        name, _, owner = parts[i].partition("; Owner: ")
        entries[name] = f"owner {owner}\n{parts[i + 1].strip()}"
    return entries


def table_rows(server, dbname: str) -> dict[str, tuple[int, str]]:
    with _connect(server, dbname) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'm') AND c.relispopulated"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname !~ '^pg_toast' ORDER BY 1").fetchall()]
        return {t: tuple(conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
                                      f" FROM ONLY {t} x").fetchone()) for t in tables}


def sequences(server, dbname: str) -> dict:
    with _connect(server, dbname) as conn:
        return dict(conn.execute("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
                                 " ORDER BY 1").fetchall())


def large_objects(server, dbname: str) -> list:
    with _connect(server, dbname) as conn:
        return conn.execute("SELECT l.oid, pg_get_userbyid(l.lomowner), md5(lo_get(l.oid)),"
                            " obj_description(l.oid, 'pg_largeobject'), l.lomacl::text"
                            " FROM pg_largeobject_metadata l ORDER BY l.oid").fetchall()


def database_properties(server, dbname: str) -> tuple:
    with _connect(server, dbname) as conn:
        return conn.execute(
            "SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datlocprovider, d.daticulocale,"
            # the grants as a set: their order in datacl means nothing (a restore may list the owner first)
            " d.datcollate, d.datctype, d.datconnlimit, ARRAY(SELECT unnest(d.datacl)::text ORDER BY 1),"
            " shobj_description(d.oid, 'pg_database'),"
            " (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0),"
            " ARRAY(SELECT pg_get_userbyid(setrole) || ':' || array_to_string(setconfig, ',')"
            "       FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole <> 0 ORDER BY 1),"
            " ARRAY(SELECT provider || ':' || label FROM pg_shseclabel"
            "       WHERE objoid = d.oid AND classoid = 'pg_database'::regclass ORDER BY 1)"
            " FROM pg_database d WHERE d.datname = current_database()").fetchone()


def security_labels(server, dbname: str) -> set[tuple]:
    """Every security label in the database, by the object it is on (the database's own included)."""
    with _connect(server, dbname) as conn:
        conn.execute("SET search_path = pg_catalog")  # objects described schema-qualified, whatever the database's
        return set(conn.execute(
            "SELECT pg_describe_object(classoid, objoid, objsubid), provider, label FROM pg_seclabel"
            " UNION ALL SELECT 'this database', provider, label FROM pg_shseclabel"
            " WHERE classoid = 'pg_database'::regclass"
            " AND objoid = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall())


def differences(source, src_db: str, server, db: str, **login) -> dict[str, set]:
    """What differs between the source and a restored copy, by kind (schema entries by header)."""
    src_schema, copy_schema = schema_entries(source, src_db), schema_entries(server, db, **login)
    src_rows, copy_rows = table_rows(source, src_db), table_rows(server, db)
    return {
        "schema": {k for k in src_schema.keys() | copy_schema.keys() if src_schema.get(k) != copy_schema.get(k)},
        "rows": {t for t in src_rows.keys() | copy_rows.keys()
                 if t not in BUSY and src_rows.get(t) != copy_rows.get(t)},
        "sequences": {k for k, v in sequences(source, src_db).items() if sequences(server, db).get(k) != v},
        "large objects": set() if large_objects(source, src_db) == large_objects(server, db) else {"large objects"},
        "database": _database_difference(database_properties(source, src_db), database_properties(server, db)),
        "security labels": security_labels(source, src_db) ^ security_labels(server, db),
    }


def _database_difference(source: tuple, copy: tuple) -> set[str]:
    if source == copy:
        return set()
    print(f"  database properties: source {source}\n                       copy   {copy}")
    return {"database properties"}


def check_busy_tables(server, db: str) -> None:
    """The backup's snapshot was consistent: no transfer half-seen, the replaced table whole."""
    assert server.execute("SELECT sum(balance), count(*) FROM app.accounts", dbname=db) == [(100000, 100)]
    generations = server.execute("SELECT count(*), count(DISTINCT generation) FROM app.replaced", dbname=db)
    assert generations == [(50, 1)], generations


class Churn:
    """Another session's work during a backup: transfers between accounts, and one TRUNCATE that
    replaces app.replaced with a new generation of its rows."""

    def __init__(self, server, dbname: str):
        self.server, self.dbname = server, dbname
        self.stop = threading.Event()
        self.transfers = 0
        self.threads = [threading.Thread(target=self._transfers, daemon=True),
                        threading.Thread(target=self._truncate, daemon=True)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _transfers(self):
        with self.server.connect(self.dbname) as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                with conn.transaction():
                    conn.execute("UPDATE app.accounts SET balance = balance - 7 WHERE id = %s", (1 + i % 100,))
                    conn.execute("UPDATE app.accounts SET balance = balance + 7 WHERE id = %s", (1 + (i * 7) % 100,))
                self.transfers += 1

    def _truncate(self):
        time.sleep(0.5)
        with self.server.connect(self.dbname) as conn, conn.transaction():
            generation = conn.execute("SELECT max(generation) + 1 FROM app.replaced").fetchone()[0]
            conn.execute("TRUNCATE app.replaced")
            conn.execute("INSERT INTO app.replaced SELECT i, %s FROM generate_series(1, 50) i", (generation,))


def object_counts(server, dbname: str) -> dict[str, int]:
    """How many objects of each kind the corpus holds (for the report)."""
    queries = {
        "schemas": "SELECT count(*) FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'",
        "extensions": "SELECT count(*) FROM pg_extension",
        **{f"relations ({kind})": f"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
           f" WHERE c.relkind = '{code}' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
           for kind, code in (("tables", "r"), ("partitioned tables", "p"), ("views", "v"),
                              ("materialized views", "m"), ("sequences", "S"), ("foreign tables", "f"),
                              ("indexes", "i"), ("partitioned indexes", "I"))},
        "functions/procedures/aggregates (not in extensions)":
            "SELECT count(*) FROM pg_proc p WHERE p.pronamespace::regnamespace::text !~ '^pg_'"
            " AND p.pronamespace::regnamespace::text <> 'information_schema' AND NOT EXISTS"
            " (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')",
        "types and domains (not in extensions, no row or array types)":
            "SELECT count(*) FROM pg_type t WHERE t.typnamespace::regnamespace::text IN ('app', 's') AND t.typrelid = 0"
            " AND t.typcategory <> 'A'",
        "operators (app)": "SELECT count(*) FROM pg_operator WHERE oprnamespace = 'app'::regnamespace",
        "operator classes/families (app)":
            "SELECT (SELECT count(*) FROM pg_opclass WHERE opcnamespace = 'app'::regnamespace)"
            " + (SELECT count(*) FROM pg_opfamily WHERE opfnamespace = 'app'::regnamespace)",
        "casts (user)": "SELECT count(*) FROM pg_cast WHERE oid >= 16384",
        "collations (user)": "SELECT count(*) FROM pg_collation WHERE collnamespace = 'app'::regnamespace",
        "conversions (user)": "SELECT count(*) FROM pg_conversion WHERE connamespace = 'app'::regnamespace",
        "text search objects (app)":
            "SELECT (SELECT count(*) FROM pg_ts_config WHERE cfgnamespace = 'app'::regnamespace)"
            " + (SELECT count(*) FROM pg_ts_dict WHERE dictnamespace = 'app'::regnamespace)"
            " + (SELECT count(*) FROM pg_ts_parser WHERE prsnamespace = 'app'::regnamespace)"
            " + (SELECT count(*) FROM pg_ts_template WHERE tmplnamespace = 'app'::regnamespace)",
        "triggers (user)": "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
        "event triggers": "SELECT count(*) FROM pg_event_trigger",
        "rules (user)": "SELECT count(*) FROM pg_rules WHERE schemaname = 'app'",
        "RLS policies": "SELECT count(*) FROM pg_policy",
        "publications": "SELECT count(*) FROM pg_publication",
        "subscriptions": "SELECT count(*) FROM pg_subscription",
        "statistics objects": "SELECT count(*) FROM pg_statistic_ext",
        "FDWs/servers/user mappings":
            "SELECT (SELECT count(*) FROM pg_foreign_data_wrapper) + (SELECT count(*) FROM pg_foreign_server)"
            " + (SELECT count(*) FROM pg_user_mapping)",
        "default privileges": "SELECT count(*) FROM pg_default_acl",
        "comments (user objects)": "SELECT count(*) FROM pg_description WHERE objoid >= 16384",
        "security labels": "SELECT (SELECT count(*) FROM pg_seclabel) + (SELECT count(*) FROM pg_shseclabel)",
        "large objects": "SELECT count(*) FROM pg_largeobject_metadata",
        "columns of built-in types in s.all_types":
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 's.all_types'::regclass AND attnum > 0",
        "table rows": "SELECT sum(n_live_tup) FROM pg_stat_user_tables",
    }
    with server.connect(dbname) as conn:
        conn.execute("ANALYZE")
        return {k: int(conn.execute(q).fetchone()[0] or 0) for k, q in queries.items()}


def _report(title: str, ours: dict[str, set], control: dict[str, set]) -> None:
    print(f"\n== {title}")
    for kind in ours:
        shared = ours[kind] & control[kind]
        print(f"  {kind}: ours {len(ours[kind])}, control {len(control[kind])}, shared {len(shared)}")
        for item in sorted(shared):
            print(f"    shared: {item}")
        for item in sorted(control[kind] - ours[kind]):
            print(f"    control only: {item}")


def test_corpus_round_trips_as_well_as_pg_dump_and_pg_restore(source, target, tmp_path):
    print("\ncorpus object counts:", object_counts(source, "corpus_src"))
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    src_info = ConnectionInfo(source.host, source.port, source.superuser, source.password)
    tgt_info = ConnectionInfo(target.host, target.port, target.superuser, target.password)

    with Churn(source, "corpus_src") as churn:
        backup = backup_postgres(repo, src_info, databases=["corpus_src"], jobs=3)
    assert churn.transfers > 0
    restore_postgres(repo, backup["restore_point_id"], tgt_info, database="corpus_src",
                     target_database="corpus_ours", include_globals=True, jobs=3)

    # The control: pg_dump -Fc during the same kind of churn, pg_restore --create on the target.
    dump = str(tmp_path / "control.dump")
    env = dict(os.environ, PGPASSWORD=source.password)
    with Churn(source, "corpus_src"):
        subprocess.run([f"{source.bin_dir}/pg_dump", "-Fc", "-h", source.host, "-p", str(source.port), "-U",
                        source.superuser, "-f", dump, "corpus_src"], env=env, check=True)
    env["PGPASSWORD"] = target.password
    subprocess.run([f"{target.bin_dir}/pg_restore", "--create", "-h", target.host, "-p", str(target.port), "-U",
                    target.superuser, "-d", "postgres", dump], env=env, capture_output=True)

    check_busy_tables(target, "corpus_ours")
    # Not asserted for the control: pg_dump locks its tables only after its snapshot is taken, so a
    # TRUNCATE that commits in between (it happens on a loaded machine) leaves the control's
    # app.replaced empty. Ours takes its locks before the snapshot (test_postgres_locks.py).
    try:
        check_busy_tables(target, "corpus_src")
    except AssertionError as exc:
        print(f"  control: busy tables inconsistent (pg_dump's lock window): {exc}")
    ours = differences(source, "corpus_src", target, "corpus_ours")
    control = differences(source, "corpus_src", target, "corpus_src")
    _report("superuser restore", ours, control)
    for kind in ours:
        assert ours[kind] <= control[kind], f"{kind}: ours differs where pg_dump/pg_restore does not: " \
                                            f"{sorted(ours[kind] - control[kind])}"
    assert ours["rows"] == set() and ours["large objects"] == set() and ours["database"] == set()
    assert len(security_labels(source, "corpus_src")) >= 15 and ours["security labels"] == set()


def test_corpus_restored_by_a_non_superuser_owner(source, target, tmp_path):
    """As on RDS: the restoring role has CREATEDB and CREATEROLE and was granted the owners' roles;
    the control is pg_restore run by the same role into a database it created."""
    for role in ROLES:
        ensure_role(target, role)
    ensure_role(target, RESTORER, f"LOGIN CREATEDB CREATEROLE PASSWORD '{RESTORER_PASSWORD}'")
    target.execute(f"GRANT {', '.join(ROLES)} TO {RESTORER} WITH ADMIN OPTION")
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    src_info = ConnectionInfo(source.host, source.port, source.superuser, source.password)
    restorer = ConnectionInfo(target.host, target.port, RESTORER, RESTORER_PASSWORD)

    backup = backup_postgres(repo, src_info, databases=["corpus_rds"], jobs=3)
    result = restore_postgres(repo, backup["restore_point_id"], restorer, database="corpus_rds",
                              target_database="corpus_rds_ours", jobs=3)
    print("\nnon-superuser restore warnings:", result["warnings"])

    dump = str(tmp_path / "control.dump")
    env = dict(os.environ, PGPASSWORD=source.password)
    subprocess.run([f"{source.bin_dir}/pg_dump", "-Fc", "-h", source.host, "-p", str(source.port), "-U",
                    source.superuser, "-f", dump, "corpus_rds"], env=env, check=True)
    env["PGPASSWORD"] = RESTORER_PASSWORD
    target.psql("CREATE DATABASE corpus_rds_control", user=RESTORER, password=RESTORER_PASSWORD)
    subprocess.run([f"{target.bin_dir}/pg_restore", "-h", target.host, "-p", str(target.port), "-U", RESTORER,
                    "-d", "corpus_rds_control", dump], env=env, capture_output=True)

    ours = differences(source, "corpus_rds", target, "corpus_rds_ours")
    control = differences(source, "corpus_rds", target, "corpus_rds_control")
    _report("non-superuser restore", ours, control)
    for kind in ("schema", "rows", "sequences", "large objects", "security labels"):
        assert ours[kind] <= control[kind], f"{kind}: ours differs where pg_restore does not: " \
                                            f"{sorted(ours[kind] - control[kind])}"
    assert ours["rows"] == set()
    assert len(security_labels(source, "corpus_rds")) >= 13 and ours["security labels"] == set()
