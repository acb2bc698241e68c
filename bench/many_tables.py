"""Issue 9's benchmark: a database of 10,000 small tables (a few rows each, a primary key and one more
index each, in 100 schemas), backed up by `rdsbackup backup postgres` next to `pg_dump -Fc -f`, and
restored by `rdsbackup restore postgres` next to `pg_restore -j2` from that local file, side by side
in one run, each RDSBACKUP_BENCH_RESTORE_REPEAT times (median). Run alone with
`make bench-many-tables` (RDSBACKUP_BENCH_PARTS=many-tables), or as part of `make bench`.

RDSBACKUP_BENCH_MANY_TABLES (default 10000) and RDSBACKUP_BENCH_MANY_SCHEMAS (default 100) size it.
The server runs with max_locks_per_transaction = 512: pg_dump alone locks every table in one
transaction, which the test server's default lock table (64 x 100 connections) cannot hold.
"""

from __future__ import annotations

import json
import os
import sys
import time

import procs

DB = "many"
SERVER_SETTINGS = {"max_locks_per_transaction": "512"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tables_and_schemas() -> tuple[int, int]:
    return (int(os.environ.get("RDSBACKUP_BENCH_MANY_TABLES", "10000")),
            int(os.environ.get("RDSBACKUP_BENCH_MANY_SCHEMAS", "100")))


def load(bench) -> None:
    tables, schemas = tables_and_schemas()
    per_schema = max(1, tables // schemas)
    bench.sql(f"CREATE DATABASE {DB}")
    script = os.path.join(bench.work, "many_tables.sql")
    with open(script, "w") as f:
        f.write(f"SELECT format('CREATE SCHEMA s%s', s) FROM generate_series(1, {schemas}) s \\gexec\n")
        f.write(
            "SELECT format('CREATE TABLE s%1$s.t%2$s (id int PRIMARY KEY, code text NOT NULL, qty int, "
            "at timestamptz DEFAULT ''2026-01-01''); CREATE INDEX ON s%1$s.t%2$s (code); "
            "INSERT INTO s%1$s.t%2$s (id, code, qty) SELECT i, md5((i * %2$s)::text), i FROM generate_series(1, 5) i',"
            f" s, t) FROM generate_series(1, {schemas}) s, generate_series(1, {per_schema}) t \\gexec\n")
    seconds = bench.psql_file(script, DB)
    procs.run([f"{bench.bin}/vacuumdb", *bench.conn.split(), "--analyze", DB], env=bench.env)
    bench.results["many_tables"] = {"tables": schemas * per_schema, "schemas": schemas,
                                    "load_seconds": round(seconds, 1)}
    log(f"many tables: {schemas * per_schema} tables in {schemas} schemas loaded in {seconds:.0f} s")


def run(bench) -> None:
    """The timed runs; the restored databases are checked (table and row counts) and dropped."""
    load(bench)
    expected = count(bench, DB)
    dump = os.path.join(bench.work, "many.dump")
    repo = bench.init_ours("ours-many")
    conn_args = ["--host", bench.server.host, "--port", str(bench.server.port), "--user", bench.server.superuser,
                 "--password-env", "BENCH_PGPASSWORD", *bench.jobs_args]
    create = f"{bench.bin}/psql -X -q {bench.conn} -d postgres -c 'CREATE DATABASE {{0}}'"
    drop = f"{bench.bin}/psql -X -q {bench.conn} -d postgres -c 'DROP DATABASE IF EXISTS {{0}}'"
    rounds = bench.restore_repeat
    rp = None
    for i in range(rounds):
        log(f"many tables, round {i + 1} of {rounds}")
        bench.checkpoint()
        res = bench.sh(f"{bench.bin}/pg_dump {bench.conn} -Fc -f {dump} {DB}")
        bench.record_time("many.backup.pg_dump_fc", res.seconds, res.cpu_seconds)
        bench.checkpoint()
        res = procs.run(["rdsbackup", "backup", "postgres", "--repo", repo, *conn_args, "--database", DB,
                         "--source-id", DB, "--json"], env=bench.env)
        bench.record_time("many.backup.ours", res.seconds, res.cpu_seconds)
        rp = json.loads(res.stdout)["restore_point_id"]

        target = "many_pg_restore"
        bench.sh(drop.format(target))
        bench.checkpoint()
        res = bench.sh(f"{create.format(target)} && {bench.bin}/pg_restore {bench.conn} -j2 -d {target} {dump}")
        bench.record_time("many.restore.pg_restore_j2", res.seconds, res.cpu_seconds)
        check(bench, target, expected)

        target = "many_ours"
        bench.sh(drop.format(target))
        bench.checkpoint()
        res = procs.run(["rdsbackup", "restore", "postgres", "--repo", repo, "--restore-point", rp, *conn_args,
                         "--database", DB, "--target-database", target, "--json"], env=bench.env)
        bench.record_time("many.restore.ours", res.seconds, res.cpu_seconds)
        check(bench, target, expected)
    for target in ("many_pg_restore", "many_ours"):
        bench.sh(drop.format(target))
    os.unlink(dump)


def count(bench, dbname: str) -> str:
    return bench.sql("SELECT count(*), sum(n_live_tup) FROM pg_stat_user_tables", dbname).split("|")[0] + "|" + \
        bench.sql("SELECT count(*) FROM pg_indexes WHERE schemaname ~ '^s[0-9]+$'", dbname)


def check(bench, dbname: str, expected: str) -> None:
    got = count(bench, dbname)
    if got != expected:
        raise RuntimeError(f"{dbname}: {got} (tables|indexes), expected {expected}")


def figures(t: dict, add) -> None:
    add("10,000 small tables: backup wall time, ours / `pg_dump -Fc`",
        t["many.backup.ours"] / t["many.backup.pg_dump_fc"], 1.0,
        detail=f"{t['many.backup.ours']:.1f} s / {t['many.backup.pg_dump_fc']:.1f} s")
    add("10,000 small tables: restore wall time, ours / `pg_restore -j2` from a local file",
        t["many.restore.ours"] / t["many.restore.pg_restore_j2"], 1.0,
        detail=f"{t['many.restore.ours']:.1f} s / {t['many.restore.pg_restore_j2']:.1f} s")
