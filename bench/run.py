"""The rdsbackup benchmark (`make bench`): issue 4's "Performance" figures, measured side by side with
pg_dump, zstd, restic and borg on the same database.

1. Starts a throwaway PostgreSQL server (tests/support/postgres_server.py: Debian's server as the
   `postgres` user, loopback port, temp dir), loads shop.sql, VACUUM ANALYZE.
2. Full backups, each timed RDSBACKUP_BENCH_REPEAT times (default 3, median reported), tools taking
   turns: `pg_dump -Fc -Z0 > /dev/null`, `pg_dump -Fc -Z0 | zstd -3`, `pg_dump -Fc -Z0 | restic backup
   --stdin`, `pg_dump -Fc -Z0 | borg create --compression zstd,3 ... -`, `rdsbackup backup postgres`
   (file:// repository, under /usr/bin/time -v), and the same with key ordering off
   (`--no-key-order`). restic, borg and ours start from an empty repository every time.
3. Applies shop_churn.sql twice; after each day an incremental with restic, borg and ours into the
   repositories of the last full run (timed once; the figures are stored bytes, i.e. repository growth).
4. Restores the day-2 state, each timed RDSBACKUP_BENCH_RESTORE_REPEAT times (default 3): ours
   (`rdsbackup restore postgres`), `pg_restore -j2` from a local `pg_dump -Fc -Z0` file, and
   `restic dump latest /shop.dump | pg_restore`. Each restore creates its database (inside the timing).
5. One full backup into `s3://` on moto's S3 server; PUT requests counted from its request log.
6. Archive (issue 13): a fresh full backup of the day-2 database next to `rdsbackup archive` of the
   day-2 restore point into a new file:// archive repository (under /usr/bin/time -v), each
   RDSBACKUP_BENCH_RESTORE_REPEAT times; then restores from the archive (next to restores from the
   backup repository). RDSBACKUP_BENCH_PARTS=archive runs only this part (after a load, a full and
   two days of churn with incrementals, ours alone).
7. Many tables (issue 9, bench/many_tables.py): 10,000 small tables in 100 schemas, backup next to
   `pg_dump -Fc`, restore next to `pg_restore -j2`; RDSBACKUP_BENCH_PARTS=many-tables runs only this.
   RDSBACKUP_BENCH_PARTS=full runs only step 2 (after the load): the full-backup figures.
8. Prints the markdown table; writes bench/results/<time>.{json,md} (and latest.{json,md}).

Environment: RDSBACKUP_BENCH_SHOP_SQL, RDSBACKUP_BENCH_CHURN_SQL (default ../shared/bench/*.sql beside
the checkout), RDSBACKUP_BENCH_REPEAT, RDSBACKUP_BENCH_RESTORE_REPEAT, RDSBACKUP_BENCH_TMPDIR (where
repositories and dumps go; default the system temp dir), RDSBACKUP_BENCH_JOBS (the worker's --jobs;
default: the worker's own default).
Everything started is stopped and every temp dir removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import many_tables  # noqa: E402
import procs  # noqa: E402
from s3count import MotoS3, put_breakdown  # noqa: E402

from tests.support.postgres_server import PostgresServer  # noqa: E402

MiB = 1024 * 1024
DB = "shop"
STDIN_NAME = "shop.dump"
RESTIC_PASSWORD = "bench-restic-password"
BORG_PASSPHRASE = "bench-borg-passphrase"
RDSBACKUP_PASSWORD = "bench-rdsbackup-password"
S3_BUCKET = "rdsbackup-bench"
S3_PREFIX = "repo"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def data_path(env_var: str, name: str) -> str:
    path = os.environ.get(env_var) or os.path.join(ROOT, "..", "shared", "bench", name)
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        sys.exit(f"benchmark data {path} not found (set {env_var})")
    return path


def tree_bytes(path: str) -> int:
    """Apparent size of every file under `path` (what `du -sb` counts, without directory entries)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(self, server: PostgresServer, work: str):
        self.server = server
        self.work = work
        self.bin = server.bin_dir
        self.repeat = int(os.environ.get("RDSBACKUP_BENCH_REPEAT", "3"))
        self.restore_repeat = int(os.environ.get("RDSBACKUP_BENCH_RESTORE_REPEAT", "3"))
        jobs = os.environ.get("RDSBACKUP_BENCH_JOBS")
        self.jobs_args = ["--jobs", jobs] if jobs else []
        self.env = dict(
            os.environ, PGPASSWORD=server.password, BENCH_PGPASSWORD=server.password,
            RESTIC_PASSWORD=RESTIC_PASSWORD, RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"),
            BORG_PASSPHRASE=BORG_PASSPHRASE, BORG_BASE_DIR=os.path.join(work, "borg-base"),
            RDSBACKUP_PASSWORD=RDSBACKUP_PASSWORD, RDSBACKUP_PG_BIN=server.bin_dir)
        self.conn = f"-h {server.host} -p {server.port} -U {server.superuser}"
        self.pg_dump = f"{self.bin}/pg_dump {self.conn} -Fc -Z0 {DB}"
        self.results: dict = {"times": {}, "bytes": {}, "rss": {}, "notes": []}

    # --- helpers -------------------------------------------------------------------------------------

    def sh(self, cmd: str, **kw) -> procs.Result:
        return procs.run(cmd, shell=True, env=self.env, **kw)

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        return procs.run([f"{self.bin}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                          self.server.host, "-p", str(self.server.port), "-U", self.server.superuser,
                          "-d", dbname, "-c", statement], env=self.env).stdout.strip()

    def psql_file(self, path: str, dbname: str = DB) -> float:
        return procs.run([f"{self.bin}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.server.host,
                          "-p", str(self.server.port), "-U", self.server.superuser, "-d", dbname, "-f", path],
                         env=self.env).seconds

    @staticmethod
    def _t(res: procs.Result) -> tuple[float, float]:
        return res.seconds, res.cpu_seconds

    def checkpoint(self) -> None:
        self.sql("CHECKPOINT")

    def record_time(self, name: str, seconds: float, cpu: float | None = None) -> None:
        # The 1-minute load average at the end of the run: a busy machine explains a slow figure.
        load = round(os.getloadavg()[0], 1)
        self.results["times"].setdefault(name, []).append(round(seconds, 3))
        self.results.setdefault("load_after", {}).setdefault(name, []).append(load)
        if cpu is not None:
            self.results.setdefault("client_cpu", {}).setdefault(name, []).append(cpu)
        log(f"  {name}: {seconds:.2f} s (client CPU {cpu} s, load {load})")

    def ours_url(self, name: str) -> str:
        return "file://" + os.path.join(self.work, name)

    def rdsbackup_backup_args(self, repo_url: str) -> list[str]:
        return ["backup", "postgres", "--repo", repo_url, "--host", self.server.host, "--port",
                str(self.server.port), "--user", self.server.superuser, "--password-env", "BENCH_PGPASSWORD",
                "--database", DB, "--source-id", DB, "--json", *self.jobs_args]

    def ours_backup(self, repo_url: str, *, unordered: bool = False, env: dict | None = None
                    ) -> tuple[procs.Result, dict]:
        """One `rdsbackup backup postgres` under /usr/bin/time -v; returns the result and time -v's figures."""
        time_out = os.path.join(self.work, "time-v.txt")
        program = [shutil.which("rdsbackup") or "rdsbackup"]
        args = [*self.rdsbackup_backup_args(repo_url), *(["--no-key-order"] if unordered else [])]
        res = procs.run(["/usr/bin/time", "-v", "-o", time_out, *program, *args],
                        env=env or self.env, sample_rss=True)
        with open(time_out) as f:
            text = f.read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        cpu_user = re.search(r"User time \(seconds\): ([\d.]+)", text)
        cpu_sys = re.search(r"System time \(seconds\): ([\d.]+)", text)
        return res, {"max_rss": int(m.group(1)) * 1024 if m else 0,
                     "cpu_user": float(cpu_user.group(1)) if cpu_user else 0.0,
                     "cpu_sys": float(cpu_sys.group(1)) if cpu_sys else 0.0}

    def init_ours(self, name: str, env: dict | None = None) -> str:
        url = self.ours_url(name) if not name.startswith("s3://") else name
        procs.run(["rdsbackup", "repo", "init", "--repo", url], env=env or self.env)
        return url

    # --- phases --------------------------------------------------------------------------------------

    def load(self, shop_sql: str) -> None:
        log(f"loading {shop_sql}")
        self.sql(f"CREATE DATABASE {DB}")
        self.results["load_seconds"] = round(self.psql_file(shop_sql), 1)
        t = procs.run([f"{self.bin}/vacuumdb", *self.conn.split(), "--analyze", DB], env=self.env).seconds
        self.results["vacuum_analyze_seconds"] = round(t, 1)
        self.results["database_bytes"] = int(self.sql(f"SELECT pg_database_size('{DB}')"))
        log(f"loaded in {self.results['load_seconds']} s; database {self.results['database_bytes'] / MiB:.0f} MiB")

    def full_backups(self) -> None:
        log(f"full backups, {self.repeat} rounds")
        for i in range(self.repeat):
            last = i == self.repeat - 1
            log(f"round {i + 1}")
            self.checkpoint()
            self.record_time("full.pg_dump_devnull", *self._t(self.sh(f"{self.pg_dump} > /dev/null")))

            zst = os.path.join(self.work, "full.dump.zst")
            self.checkpoint()
            self.record_time("full.pg_dump_zstd", *self._t(self.sh(f"{self.pg_dump} | zstd -3 -q -f -o {zst}")))
            self.results["bytes"]["full.pg_dump_zstd"] = os.path.getsize(zst)
            os.unlink(zst)

            restic_repo = os.path.join(self.work, "restic" if last else "restic-tmp")
            procs.run(["restic", "init", "-q", "-r", restic_repo], env=self.env)
            self.checkpoint()
            res = self.sh(f"{self.pg_dump} | restic -r {restic_repo} backup -q --host bench --stdin "
                          f"--stdin-filename {STDIN_NAME}")
            self.record_time("full.restic", res.seconds, res.cpu_seconds)
            self.results["bytes"]["full.restic"] = tree_bytes(restic_repo)
            if not last:
                shutil.rmtree(restic_repo)

            borg_repo = os.path.join(self.work, "borg" if last else "borg-tmp")
            procs.run(["borg", "init", "-e", "repokey", borg_repo], env=self.env)
            self.checkpoint()
            res = self.sh(f"{self.pg_dump} | borg create --compression zstd,3 --stdin-name {STDIN_NAME} "
                          f"{borg_repo}::full -")
            self.record_time("full.borg", res.seconds, res.cpu_seconds)
            self.results["bytes"]["full.borg"] = tree_bytes(borg_repo)
            if not last:
                shutil.rmtree(borg_repo)
                shutil.rmtree(os.path.join(self.work, "borg-base"), ignore_errors=True)

            ours = "ours" if last else "ours-tmp"
            url = self.init_ours(ours)
            before = tree_bytes(os.path.join(self.work, ours))
            self.checkpoint()
            res, tv = self.ours_backup(url)
            self.record_time("full.ours", res.seconds, res.cpu_seconds)
            self.results["rss"].setdefault("full.ours.time_v_max_rss", []).append(tv["max_rss"])
            self.results["rss"].setdefault("full.ours.tree_sampled_peak", []).append(res.peak_tree_rss)
            self.results.setdefault("cpu", {}).setdefault("full.ours", []).append(
                round(tv["cpu_user"] + tv["cpu_sys"], 2))
            self.results["bytes"]["full.ours"] = tree_bytes(os.path.join(self.work, ours)) - before
            self.results["bytes"]["ours.repo_after_init"] = before
            if last:
                self.results["ours_full_restore_point"] = json.loads(res.stdout)["restore_point_id"]
            else:
                shutil.rmtree(os.path.join(self.work, ours))

            url = self.init_ours("ours-unordered")
            self.checkpoint()
            res, tv = self.ours_backup(url, unordered=True)
            self.record_time("full.ours_unordered", res.seconds, res.cpu_seconds)
            self.results["bytes"]["full.ours_unordered"] = tree_bytes(os.path.join(self.work, "ours-unordered"))
            shutil.rmtree(os.path.join(self.work, "ours-unordered"))

    def churn_and_incrementals(self, churn_sql: str) -> None:
        repos = {"restic": os.path.join(self.work, "restic"), "borg": os.path.join(self.work, "borg"),
                 "ours": os.path.join(self.work, "ours")}
        for day in (1, 2):
            log(f"day {day}: applying {churn_sql}")
            self.results[f"churn_day{day}_seconds"] = round(self.psql_file(churn_sql), 1)
            self.checkpoint()
            before = tree_bytes(repos["restic"])
            res = self.sh(f"{self.pg_dump} | restic -r {repos['restic']} backup -q --host bench --stdin "
                          f"--stdin-filename {STDIN_NAME}")
            self.record_time(f"day{day}.restic", res.seconds, res.cpu_seconds)
            self.results["bytes"][f"day{day}.restic"] = tree_bytes(repos["restic"]) - before

            before = tree_bytes(repos["borg"])
            self.checkpoint()
            res = self.sh(f"{self.pg_dump} | borg create --compression zstd,3 --stdin-name {STDIN_NAME} "
                          f"{repos['borg']}::day{day} -")
            self.record_time(f"day{day}.borg", res.seconds, res.cpu_seconds)
            self.results["bytes"][f"day{day}.borg"] = tree_bytes(repos["borg"]) - before

            before = tree_bytes(repos["ours"])
            self.checkpoint()
            res, _ = self.ours_backup(self.ours_url("ours"))
            self.record_time(f"day{day}.ours", res.seconds, res.cpu_seconds)
            self.results["bytes"][f"day{day}.ours"] = tree_bytes(repos["ours"]) - before
            self.results[f"ours_day{day}_restore_point"] = json.loads(res.stdout)["restore_point_id"]
            for tool in ("restic", "borg", "ours"):
                log(f"  day {day} {tool}: +{self.results['bytes'][f'day{day}.{tool}'] / MiB:.1f} MiB stored")

    def restores(self) -> None:
        log(f"restores of the day-2 state, {self.restore_repeat} rounds")
        local_dump = os.path.join(self.work, "day2.dump")
        self.sh(f"{self.pg_dump} > {local_dump}")
        expected = self.sql("SELECT count(*) FROM orders", DB), self.sql("SELECT count(*) FROM attachments", DB)
        rp = self.results["ours_day2_restore_point"]
        pg_restore = f"{self.bin}/pg_restore {self.conn}"
        create = f"{self.bin}/psql -X -q {self.conn} -d postgres -c 'CREATE DATABASE {{0}}'"
        for i in range(self.restore_repeat):
            log(f"round {i + 1}")
            target = "restored_pg_restore"
            self.checkpoint()
            res = self.sh(f"{create.format(target)} && {pg_restore} -j2 -d {target} {local_dump}")
            self.record_time("restore.pg_restore_j2", res.seconds, res.cpu_seconds)
            self.check_restored(target, expected)

            target = "restored_restic"
            self.checkpoint()
            res = self.sh(f"{create.format(target)} && restic -r {os.path.join(self.work, 'restic')} dump -q "
                          f"latest /{STDIN_NAME} | {pg_restore} -d {target}")
            self.record_time("restore.restic_dump_pg_restore", res.seconds, res.cpu_seconds)
            self.check_restored(target, expected)

            target = "restored_ours"
            self.checkpoint()
            res = procs.run(["rdsbackup", "restore", "postgres", "--repo", self.ours_url("ours"), "--restore-point",
                             rp, "--host", self.server.host, "--port", str(self.server.port), "--user",
                             self.server.superuser, "--password-env", "BENCH_PGPASSWORD", "--database", DB,
                             "--target-database", target, "--json", *self.jobs_args], env=self.env)
            self.record_time("restore.ours", res.seconds, res.cpu_seconds)
            self.check_restored(target, expected)
        os.unlink(local_dump)

    def history_ours_only(self, churn_sql: str) -> None:
        """For the archive part alone: a full and two days of churn with incrementals, ours only."""
        url = self.init_ours("ours")
        self.checkpoint()
        self.ours_backup(url)
        for day in (1, 2):
            log(f"day {day}: applying {churn_sql}")
            self.psql_file(churn_sql)
            self.checkpoint()
            res, _ = self.ours_backup(url)
            self.results[f"ours_day{day}_restore_point"] = json.loads(res.stdout)["restore_point_id"]

    def ours_restore(self, repo_url: str, rp: str, target: str, name: str, expected: tuple[str, str]) -> None:
        self.checkpoint()
        res = procs.run(["rdsbackup", "restore", "postgres", "--repo", repo_url, "--restore-point", rp, "--host",
                         self.server.host, "--port", str(self.server.port), "--user", self.server.superuser,
                         "--password-env", "BENCH_PGPASSWORD", "--database", DB, "--target-database", target,
                         "--replace", "--json", *self.jobs_args], env=self.env)
        self.record_time(name, res.seconds, res.cpu_seconds)
        self.check_restored(target, expected)

    def archives(self, *, restore_baseline: bool) -> None:
        """Issue 13's figures: archive the day-2 restore point (a self-contained full in its own
        repository) next to a fresh full backup of the same (day-2) database, then restore from the
        archive next to a restore from the backup repository."""
        rp = self.results["ours_day2_restore_point"]
        log(f"archive of the day-2 restore point {rp}, {self.restore_repeat} rounds")
        env = dict(self.env, RDSBACKUP_ARCHIVE_PASSWORD="bench-archive-password")
        archive_dir = os.path.join(self.work, "archive")
        time_out = os.path.join(self.work, "time-v-archive.txt")
        for i in range(self.restore_repeat):
            log(f"round {i + 1}")
            full = "ours-day2-full"
            url = self.init_ours(full)
            before = tree_bytes(os.path.join(self.work, full))
            self.checkpoint()
            res, _ = self.ours_backup(url)
            self.record_time("day2_full.ours", res.seconds, res.cpu_seconds)
            self.results["bytes"]["day2_full.ours"] = tree_bytes(os.path.join(self.work, full)) - before
            shutil.rmtree(os.path.join(self.work, full))

            shutil.rmtree(archive_dir, ignore_errors=True)
            before = 0  # `rdsbackup archive` creates the archive (named with the source's chunk-id key)
            res = procs.run(["/usr/bin/time", "-v", "-o", time_out, "rdsbackup", "archive", "--repo",
                             self.ours_url("ours"), "--archive-repo", "file://" + archive_dir, "--restore-point",
                             rp, "--json"], env=env, sample_rss=True)
            self.record_time("archive.ours", res.seconds, res.cpu_seconds)
            self.results["bytes"]["archive.ours"] = tree_bytes(archive_dir) - before
            self.results.setdefault("archive_result", []).append(json.loads(res.stdout))
            with open(time_out) as f:
                m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
            self.results["rss"].setdefault("archive.ours.time_v_max_rss", []).append(int(m.group(1)) * 1024 if m else 0)
        expected = self.sql("SELECT count(*) FROM orders", DB), self.sql("SELECT count(*) FROM attachments", DB)
        log(f"restores from the archive, {self.restore_repeat} rounds")
        for i in range(self.restore_repeat):
            log(f"round {i + 1}")
            if restore_baseline:
                self.ours_restore(self.ours_url("ours"), rp, "restored_ours", "restore.ours", expected)
            self.env, saved = env, self.env
            try:
                self.ours_restore("file://" + archive_dir, rp, "restored_archive", "restore.ours_archive", expected)
            finally:
                self.env = saved

    def check_restored(self, target: str, expected: tuple[str, str]) -> None:
        got = self.sql("SELECT count(*) FROM orders", target), self.sql("SELECT count(*) FROM attachments", target)
        if got != expected:
            raise RuntimeError(f"{target}: row counts {got}, expected {expected}")
        self.sql(f"DROP DATABASE {target} WITH (FORCE)")

    def s3_puts(self) -> None:
        log("full backup into s3:// on moto's server")
        import boto3

        moto = MotoS3(os.path.join(self.work, "moto.log"))
        try:
            env = dict(self.env, **moto.env())
            s3 = boto3.client("s3", endpoint_url=moto.endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
            s3.create_bucket(Bucket=S3_BUCKET)
            url = self.init_ours(f"s3://{S3_BUCKET}/{S3_PREFIX}", env=env)

            def stored() -> int:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=S3_PREFIX + "/")
                return sum(o["Size"] for page in pages for o in page.get("Contents", []))

            before_bytes, before_reqs = stored(), len(moto.requests())
            self.checkpoint()
            res, tv = self.ours_backup(url, env=env)
            self.record_time("full.ours_s3", res.seconds, res.cpu_seconds)
            reqs = moto.requests()[before_reqs:]
            stored_bytes = stored() - before_bytes
            puts = [r for r in reqs if r[0] == "PUT"]
            self.results["s3"] = {
                "put_requests": len(puts), "failed_put_requests": sum(1 for r in puts if r[2] >= 300),
                "stored_bytes": stored_bytes, "puts_by_kind": dict(put_breakdown(reqs, S3_BUCKET, S3_PREFIX)),
                "requests_by_method": {m: sum(1 for r in reqs if r[0] == m) for m in sorted({r[0] for r in reqs})},
                "max_rss": tv["max_rss"]}
            log(f"  {len(puts)} PUTs for {stored_bytes / MiB:.1f} MiB: {self.results['s3']['puts_by_kind']}")
        finally:
            moto.stop()


# --- the table -----------------------------------------------------------------------------------------

def archive_figures(r: dict, t: dict, b: dict, add) -> None:
    """Issue 13: archiving the day-2 restore point and restoring from the archive."""
    ratio = t["archive.ours"] / t["day2_full.ours"]
    add("archive of the day-2 restore point, wall time / a fresh full backup of the day-2 database", ratio, 0.6,
        detail=f"{t['archive.ours']:.1f} s / {t['day2_full.ours']:.1f} s")
    add("archive stored bytes / the fresh full's stored bytes", b["archive.ours"] / b["day2_full.ours"], 1.05,
        detail=f"{b['archive.ours'] / MiB:.1f} MiB / {b['day2_full.ours'] / MiB:.1f} MiB")
    arss = max(r["rss"]["archive.ours.time_v_max_rss"]) / MiB
    add("archive peak RSS", arss, 256, fmt="{:.0f} MiB", target_text="≤ 256 MiB",
        detail="/usr/bin/time -v max RSS over all archive runs")
    add("restore wall time from the archive / from the backup repository",
        t["restore.ours_archive"] / t["restore.ours"], 1.1,
        detail=f"{t['restore.ours_archive']:.1f} s / {t['restore.ours']:.1f} s (file://: no retrieval wait)")


def figures(r: dict) -> list[dict]:
    t = {k: median(v) for k, v in r["times"].items()}
    b = r["bytes"]
    rows = []

    def add(name: str, value: float, target: float, fmt: str = "{:.3f}", target_text: str | None = None,
            ok: bool | None = None, detail: str = "") -> None:
        passed = value <= target if ok is None else ok
        rows.append({"figure": name, "value": value, "shown": fmt.format(value),
                     "target": target_text or f"≤ {target}", "status": "PASS" if passed else "MISS",
                     "detail": detail})

    if "archive.ours" in t:
        archive_figures(r, t, b, add)
    if "many.backup.ours" in t:
        many_tables.figures(t, add)
    if "full.restic" not in t:  # RDSBACKUP_BENCH_PARTS=archive or many-tables: those figures only
        return rows
    add("full backup wall time, ours / restic's", t["full.ours"] / t["full.restic"], 0.7,
        detail=f"{t['full.ours']:.1f} s / {t['full.restic']:.1f} s")
    add("full backup wall time, ours / `pg_dump -Fc -Z0 > /dev/null`", t["full.ours"] / t["full.pg_dump_devnull"],
        1.5, detail=f"{t['full.ours']:.1f} s / {t['full.pg_dump_devnull']:.1f} s")
    if "day2.ours" in b:  # not with RDSBACKUP_BENCH_PARTS=full
        smaller = min(b["day2.restic"], b["day2.borg"])
        add("day-2 incremental new stored bytes, ours / the smaller of restic's and borg's",
            b["day2.ours"] / smaller, 0.1,
            detail=f"{b['day2.ours'] / MiB:.1f} MiB / {smaller / MiB:.1f} MiB "
                   f"(restic {b['day2.restic'] / MiB:.1f}, borg {b['day2.borg'] / MiB:.1f})")
        add("day-2 incremental new stored bytes (every object written) / full stored bytes",
            b["day2.ours"] / b["full.ours"], 0.08,
            detail=f"{b['day2.ours'] / MiB:.1f} MiB / {b['full.ours'] / MiB:.1f} MiB")
    add("full backup wall time with key-ordered tables / the same without ordering",
        t["full.ours"] / t["full.ours_unordered"], 1.25,
        detail=f"{t['full.ours']:.1f} s / {t['full.ours_unordered']:.1f} s (ordering off: --no-key-order)")
    if "restore.ours" in t:
        add("restore wall time, ours / `pg_restore -j2` from a local file",
            t["restore.ours"] / t["restore.pg_restore_j2"], 1.15,
            detail=f"{t['restore.ours']:.1f} s / {t['restore.pg_restore_j2']:.1f} s")
        add("restore wall time, ours / `restic dump ... | pg_restore` of the same day",
            t["restore.ours"] / t["restore.restic_dump_pg_restore"], 0.9,
            detail=f"{t['restore.ours']:.1f} s / {t['restore.restic_dump_pg_restore']:.1f} s")
    rss = max(r["rss"]["full.ours.time_v_max_rss"]) / MiB
    tree = max(r["rss"]["full.ours.tree_sampled_peak"]) / MiB
    add("worker peak RSS during full backup", rss, 256, fmt="{:.0f} MiB", target_text="≤ 256 MiB",
        detail=f"/usr/bin/time -v max RSS (largest single process) over all full runs; "
               f"sampled sum over the process tree {tree:.0f} MiB")
    s3 = r.get("s3")
    if s3:
        units = s3["stored_bytes"] / (8 * MiB)
        ratio = s3["put_requests"] / units
        packs = s3["puts_by_kind"].get("data", 0)
        others = s3["put_requests"] - packs
        add("PUT requests against moto's S3 server / (stored bytes / 8 MiB)", ratio, 1.1,
            target_text="≤ 1.1 (+ a few for index and manifest)",
            ok=packs / units <= 1.1 and others <= max(10, 0.02 * units),
            detail=f"{s3['put_requests']} PUTs / ({s3['stored_bytes'] / MiB:.1f} MiB / 8 MiB); "
                   f"by kind {s3['puts_by_kind']}; packs alone {packs / units:.3f}")
    return rows


def markdown(r: dict, rows: list[dict]) -> str:
    lines = ["| figure | measured | target | result | detail |", "|---|---|---|---|---|"]
    lines += [f"| {x['figure']} | {x['shown']} | {x['target']} | {x['status']} | {x['detail']} |" for x in rows]
    t = {k: median(v) for k, v in r["times"].items()}
    lines += ["", "| run | median s (all runs) |", "|---|---|"]
    lines += [f"| {k} | {t[k]:.2f} ({', '.join(f'{x:.2f}' for x in v)}) |" for k, v in r["times"].items()]
    cpu = r.get("client_cpu", {})
    lines += ["", "| run | median client CPU s (user+sys of the commands; not the server's) |", "|---|---|"]
    lines += [f"| {k} | {median(v):.2f} |" for k, v in cpu.items()]
    lines += ["", "| stored | MiB |", "|---|---|"]
    lines += [f"| {k} | {v / MiB:.1f} |" for k, v in r["bytes"].items()]
    lines += ["", *[f"- {n}" for n in r["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> int:
    # RDSBACKUP_BENCH_PARTS=archive runs only issue 13's archive figures (ours alone, ~3 minutes);
    # =many-tables only issue 9's 10,000-table database (ours next to pg_dump/pg_restore).
    parts = os.environ.get("RDSBACKUP_BENCH_PARTS", "all")
    archive_only = parts == "archive"
    many_tables_only = parts == "many-tables"
    full_only = parts == "full"  # the full-backup figures alone: load, full backups (ours and the peers)
    if not many_tables_only:
        shop_sql = data_path("RDSBACKUP_BENCH_SHOP_SQL", "shop.sql")
        churn_sql = data_path("RDSBACKUP_BENCH_CHURN_SQL", "shop_churn.sql")
    needed = ("/usr/bin/time", "rdsbackup") if archive_only or many_tables_only else (
        "restic", "borg", "zstd", "/usr/bin/time", "rdsbackup", *(() if full_only else ("moto_server",)))
    for tool in needed:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run `make bench` (it installs what is missing)")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="rdsbackup-bench-", dir=os.environ.get("RDSBACKUP_BENCH_TMPDIR"))
    server = None
    try:
        log(f"work dir {work}; starting PostgreSQL")
        # pg_dump of the many-tables database locks 10,000 tables in one transaction (many_tables.py).
        server = PostgresServer.start(settings=many_tables.SERVER_SETTINGS)
        bench = Bench(server, work)
        r = bench.results
        r["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        r["versions"] = {
            "postgres": bench.sql("SHOW server_version"),
            **({} if archive_only or many_tables_only else {
                "restic": procs.run(["restic", "version"]).stdout.strip(),
                "borg": procs.run(["borg", "--version"]).stdout.strip(),
                "zstd": procs.run(["zstd", "--version"]).stdout.strip()}),
            "cpus": os.cpu_count(),
            "commit": procs.run(["git", "-C", ROOT, "rev-parse", "HEAD"], check=False).stdout.strip(),
            # The worker is installed editable: uncommitted changes under worker_image/ are measured too.
            "worker_image_dirty": bool(procs.run(["git", "-C", ROOT, "status", "--porcelain", "--",
                                                  "worker_image"], check=False).stdout.strip())}
        r["notes"] += [
            f"full backups: median of {bench.repeat} runs, each into an empty repository; restores: median of "
            f"{bench.restore_repeat}; day-1/day-2 incrementals: one run each (their figures are bytes).",
            "stored bytes = growth of the repository directory (apparent size of every file: packs, "
            "index, manifest, restic/borg metadata).",
            "every restore creates its target database inside the timing (ours does it itself).",
            "no --jobs given to rdsbackup: the worker's default" if not bench.jobs_args
            else f"rdsbackup {' '.join(bench.jobs_args)}",
            "page cache warm for every tool (the database fits in RAM).",
            "times are wall clock on a shared machine: `load_after` in the JSON has the 1-minute load average "
            "after every run.",
        ]
        if many_tables_only:
            many_tables.run(bench)
        else:
            bench.load(shop_sql)
        if many_tables_only:
            pass
        elif archive_only:
            bench.history_ours_only(churn_sql)
            bench.archives(restore_baseline=True)
        elif full_only:
            bench.full_backups()
        else:
            bench.full_backups()
            bench.churn_and_incrementals(churn_sql)
            bench.restores()
            bench.s3_puts()
            bench.archives(restore_baseline=False)
            many_tables.run(bench)
        r["total_seconds"] = round(time.monotonic() - started, 1)
        rows = figures(r)
        r["figures"] = rows
        md = markdown(r, rows)
        print(md)
        out_dir = os.path.join(HERE, "results")
        os.makedirs(out_dir, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for name in (stamp, "latest"):
            with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
                json.dump(r, f, indent=2)
            with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
                f.write(md)
        log(f"done in {r['total_seconds']:.0f} s; results in {out_dir}/{stamp}.{{json,md}}")
        return 0
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}); cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.kill_all()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
