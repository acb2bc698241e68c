"""Full backups of the shop database with two (or more) versions of the worker, alternating: where a
change in backup time came from.

Loads shop.sql once into a throwaway PostgreSQL (as `run.py` does), then runs `rdsbackup backup
postgres --database shop` into an empty file:// repository with each side's worker package in turn
(PYTHONPATH; the same interpreter and libraries), `--repeat` rounds, the order of the sides reversed
every other round. Per run: wall time, the worker's own CPU (all its threads), its children's CPU
(psql, pg_dump), and the server's CPU (every PostgreSQL process: the backends the backup opened,
reaped into the postmaster's children time, plus the background processes), and the 1-minute load.
On a shared machine the CPU figures are the steadier instrument.

    python bench/compare_commits.py --side old=c044674 --side new=.      [--repeat 5] [--jobs N]
    python bench/compare_commits.py --side new=. --profile               # + one py-spy run per side
    python bench/compare_commits.py --side old=c044674 --side new=. --restore   # restores instead

A side is NAME=REF: REF a commit (its worker_image/ extracted with `git archive` into the work dir) or
a directory (a checkout, or its worker_image/). `.` is this checkout (uncommitted changes included).
`--profile` adds one run per side under `py-spy record` (not timed; `pip install py-spy`) and writes
bench/results/compare-<side>.txt. Same RDSBACKUP_BENCH_* variables as run.py. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import procs  # noqa: E402
import run  # noqa: E402

# The worker run in-process, reporting its own CPU apart from its children's (psql, pg_dump).
LAUNCHER = r"""
import json, resource, sys
from rdsbackup.cli import main
try:
    code = main()
finally:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print("COMPARE-CPU " + json.dumps({"self": me.ru_utime + me.ru_stime, "children": kids.ru_utime + kids.ru_stime,
          "module": __import__("rdsbackup").__file__}), file=sys.stderr)
sys.exit(code)
"""
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster, its ended children (reaped: its children time) and its live ones."""
    fields = _stat(postmaster)
    if fields is None:
        raise RuntimeError(f"postmaster {postmaster} is gone")
    ticks = sum(int(v) for v in fields[11:15])
    for name in os.listdir("/proc"):
        if name.isdigit():
            child = _stat(int(name))
            if child is not None and child[1] == str(postmaster):
                ticks += int(child[11]) + int(child[12])
    return ticks / _TICK


def worker_dir(ref: str, work: str, name: str) -> str:
    """The worker_image directory of a side (see the module docstring)."""
    path = ROOT if ref == "." else ref
    if os.path.isdir(path):
        inner = os.path.join(path, "worker_image")
        return os.path.abspath(inner if os.path.isdir(os.path.join(inner, "rdsbackup")) else path)
    target = os.path.join(work, f"side-{name}")
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "worker_image"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return os.path.join(target, "worker_image")


class Compare:
    def __init__(self, bench: run.Bench, sides: dict[str, str], postmaster: int):
        self.bench = bench
        self.sides = sides
        self.postmaster = postmaster
        self.rows: dict[str, list[dict]] = {name: [] for name in sides}
        self.restore_points: dict[str, tuple[str, str]] = {}
        self.from_archive = False
        self.expected = (bench.sql("SELECT count(*) FROM orders", run.DB),
                         bench.sql("SELECT count(*) FROM attachments", run.DB))

    def env(self, side: str) -> dict:
        return {**self.bench.env, "PYTHONPATH": self.sides[side], "RDSBACKUP_ARCHIVE_PASSWORD": "compare-archive"}

    def command(self, side: str, *args: str) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, *args]

    def backup_args(self, side: str, tag: str) -> list[str]:
        url = self.bench.ours_url(f"repo-{side}-{tag}")
        procs.run(self.command(side, "repo", "init", "--repo", url), env=self.env(side))
        return list(self.bench.rdsbackup_backup_args(url))

    def once(self, side: str, tag: str) -> dict:
        args = self.backup_args(side, tag)
        row = self.measure(side, args)
        shutil.rmtree(os.path.join(self.bench.work, f"repo-{side}-{tag}"))
        return row

    def prepare_restore(self, side: str) -> None:
        """A restore point of the shop database written by the side's own code (a newer repository
        format may not be readable by an older side), kept for its restores."""
        args = self.backup_args(side, "restore")
        res = procs.run(self.command(side, *args), env=self.env(side))
        url, rp = args[args.index("--repo") + 1], json.loads(res.stdout)["restore_point_id"]
        if self.from_archive:  # restores read the point's copy in an archive repository instead
            archive = self.bench.ours_url(f"archive-{side}")
            procs.run(self.command(side, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", rp,
                                   "--json"), env=self.env(side))
            url = archive
        self.restore_points[side] = (url, rp)

    def restore_once(self, side: str) -> dict:
        url, rp = self.restore_points[side]
        server = self.bench.server
        target = f"compare_{side}"
        row = self.measure(side, ["restore", "postgres", "--repo", url, "--restore-point", rp, "--host", server.host,
                                  "--port", str(server.port), "--user", server.superuser, "--password-env",
                                  "BENCH_PGPASSWORD", "--database", run.DB, "--target-database", target, "--json",
                                  *self.bench.jobs_args])
        self.bench.check_restored(target, self.expected)
        return row

    def measure(self, side: str, args: list[str]) -> dict:
        """One run of the side's worker with `args`: its wall time and CPU (its own, its children's, the
        server's)."""
        self.bench.checkpoint()
        server0 = server_cpu(self.postmaster)
        res = procs.run(self.command(side, *args), env=self.env(side))
        server = server_cpu(self.postmaster) - server0
        cpu = json.loads(res.stderr[res.stderr.rindex("COMPARE-CPU ") + 12:].splitlines()[0])
        if not cpu["module"].startswith(self.sides[side]):
            raise RuntimeError(f"side {side} ran {cpu['module']}, not the code under {self.sides[side]}")
        row = {"wall": res.seconds, "worker_cpu": cpu["self"], "children_cpu": cpu["children"],
               "server_cpu": server, "load": os.getloadavg()[0]}
        self.rows[side].append(row)
        run.log(f"  {side}: wall {row['wall']:.2f} s, worker CPU {row['worker_cpu']:.2f} s, children "
                f"{row['children_cpu']:.2f} s, server {row['server_cpu']:.2f} s, load {row['load']:.1f}")
        return row

    def profile(self, side: str, out_dir: str) -> str:
        import profile as py_spy_profile  # bench/profile.py: the summary of py-spy's raw output

        args = self.backup_args(side, "profile")
        raw = os.path.join(out_dir, f"compare-{side}.raw")
        self.bench.checkpoint()
        res = procs.run(["py-spy", "record", "--threads", "--nonblocking", "--rate", "200", "--format", "raw",
                         "-o", raw, "--", *self.command(side, *args)], env=self.env(side))
        text = f"side {side}: {res.seconds:.1f} s wall under py-spy\n" + py_spy_profile.summarize(raw, top=40)
        path = os.path.join(out_dir, f"compare-{side}.txt")
        with open(path, "w") as f:
            f.write(text)
        return path

    def table(self) -> str:
        keys = ("wall", "worker_cpu", "children_cpu", "server_cpu")
        out = ["| side | runs | wall s | worker CPU s | children CPU s | server CPU s | load (1 min) |",
               "|---|---|---|---|---|---|---|"]
        med: dict[str, dict[str, float]] = {}
        for side, rows in self.rows.items():
            med[side] = {k: statistics.median(r[k] for r in rows) for k in keys}
            loads = [r["load"] for r in rows]
            out.append(f"| {side} ({self.sides[side]}) | {len(rows)} | "
                       + " | ".join(f"{med[side][k]:.2f}" for k in keys)
                       + f" | {min(loads):.1f}-{max(loads):.1f} |")
        names = list(self.rows)
        for other in names[1:]:
            out.append("")
            out.append(f"{other} / {names[0]}: " + ", ".join(
                f"{k} {med[other][k] / med[names[0]][k]:.3f}" for k in keys if med[names[0]][k]))
        out.append("")
        out.append("every run (wall / worker / children / server CPU s, load):")
        for side, rows in self.rows.items():
            out.append(f"- {side}: " + "; ".join(
                f"{r['wall']:.2f}/{r['worker_cpu']:.2f}/{r['children_cpu']:.2f}/{r['server_cpu']:.2f} "
                f"@{r['load']:.1f}" for r in rows))
        return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", action="append", required=True, metavar="NAME=REF")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one more run per side under py-spy")
    parser.add_argument("--restore", action="store_true",
                        help="time restores (of a restore point each side backed up) instead of backups")
    parser.add_argument("--from-archive", action="store_true",
                        help="with --restore: restore the point's copy in an archive repository (`rdsbackup archive`)")
    args = parser.parse_args()
    sides_spec = dict(s.split("=", 1) for s in args.side)
    if args.profile and not shutil.which("py-spy"):
        sys.exit("py-spy not found: pip install py-spy")

    try:
        with procs.stoppable_run("rdsbackup-compare-") as (work, servers):
            sides = {name: worker_dir(ref, work, name) for name, ref in sides_spec.items()}
            server = run.PostgresServer.start()
            servers.append(server)
            bench = run.Bench(server, work)
            bench.load(run.data_path("RDSBACKUP_BENCH_SHOP_SQL", "shop.sql"))
            with open(os.path.join(server.data_dir, "postmaster.pid")) as f:
                postmaster = int(f.readline())
            compare = Compare(bench, sides, postmaster)
            compare.from_archive = args.from_archive
            names = list(sides)
            if args.restore:
                for name in names:
                    compare.prepare_restore(name)
            for i in range(args.repeat):
                run.log(f"round {i + 1}")
                for name in (names if i % 2 == 0 else names[::-1]):
                    if args.restore:
                        compare.restore_once(name)
                    else:
                        compare.once(name, str(i))
            print(compare.table())
            if args.profile:
                out_dir = os.path.join(HERE, "results")
                os.makedirs(out_dir, exist_ok=True)
                for name in names:
                    print(f"profile of {name}: {compare.profile(name, out_dir)}")
            return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
