"""Issue 9's 10,000-table backup, this checkout against another (`--baseline`), next to `pg_dump -Fc`, on
one database, alternating, with the CPU each costs the client AND the server.

The many-tables figure is decided by total CPU on a loaded machine, and half of a backup's CPU is spent by
the server's backends, which `make bench` does not see. Here the server's CPU is the postmaster's own and
its children's (ended backends are counted through the postmaster's reaped-children time), read from
/proc before and after each run, with autovacuum off so that only the run's sessions count.

    git worktree add --detach /tmp/base <commit to compare with>
    python bench/many_tables_ab.py --baseline /tmp/base/worker_image [--repeat 5] [--schema-only]

Same environment variables as many_tables.py (RDSBACKUP_BENCH_MANY_TABLES, ..._SCHEMAS). Every run of ours
goes into a fresh repository (a first backup: nothing deduplicates). `--schema-only` adds the schema-only
pg_dump that ours runs (its pre- and post-data sections) as a peer of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import many_tables  # noqa: E402
import procs  # noqa: E402
import run  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
# The console script's entry point (`python -m` would compile the CLI module on every run).
ENTRY = "import sys; from rdsbackup.cli import main; sys.exit(main())"


def server_cpu(data_dir: str) -> float:
    """CPU seconds of the postmaster, its live children and the children it has reaped."""
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    total = _stat_ticks(postmaster, reaped=True)
    with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
        for pid in f.read().split():
            total += _stat_ticks(int(pid), reaped=False)
    return total / TICKS


def _stat_ticks(pid: int, *, reaped: bool) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # ended since the listing: counted in the postmaster's reaped time
        return 0
    # after the command name: state is field 3; utime, stime, cutime, cstime are fields 14-17
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime + ((cutime + cstime) if reaped else 0)


def measured(server, command: list[str] | str, env: dict, **kw) -> dict:
    load0 = os.getloadavg()[0]
    cpu0 = server_cpu(server.data_dir)
    res = procs.run(command, env=env, shell=isinstance(command, str), **kw)
    cpu1 = server_cpu(server.data_dir)
    return {"wall": res.seconds, "client": res.cpu_seconds, "server": cpu1 - cpu0,
            "load": (load0 + os.getloadavg()[0]) / 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="worker_image directory of the code to compare with")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--schema-only", action="store_true", help="also time ours' schema-only pg_dump alone")
    parser.add_argument("--server", help="a JSON file naming a running server that holds the database already "
                                         "(host, port, user, password, data_dir, bin): no load")
    args = parser.parse_args()
    this = os.path.join(os.path.dirname(HERE), "worker_image")
    try:
        with procs.stoppable_run("rdsbackup-many-ab-") as (work, servers):
            if args.server:
                with open(args.server) as f:
                    given = json.load(f)
                server = types.SimpleNamespace(host=given["host"], port=given["port"], superuser=given["user"],
                                               password=given["password"], data_dir=given["data_dir"],
                                               bin_dir=given["bin"])
                bench = run.Bench(server, work)
                tables = int(bench.sql("SELECT count(*) FROM pg_stat_user_tables", many_tables.DB))
            else:
                server = run.PostgresServer.start(settings={**many_tables.SERVER_SETTINGS, "autovacuum": "off"})
                servers.append(server)
                bench = run.Bench(server, work)
                many_tables.load(bench)
                tables = bench.results["many_tables"]["tables"]
            conn_args = ["--host", server.host, "--port", str(server.port), "--user", server.superuser,
                         "--password-env", "BENCH_PGPASSWORD", *bench.jobs_args, "--database", many_tables.DB,
                         "--source-id", many_tables.DB, "--json"]
            dump = os.path.join(work, "many.dump")
            peers = {"pg_dump -Fc": lambda: measured(server, f"{bench.bin}/pg_dump {bench.conn} -Fc -f {dump} "
                                                             f"{many_tables.DB}", bench.env)}
            if args.schema_only:
                peers["pg_dump schema only"] = lambda: measured(
                    server, f"{bench.bin}/pg_dump {bench.conn} -Fc -Z0 --section=pre-data --section=post-data "
                            f"-f {dump} {many_tables.DB}", bench.env)
            for name, worker_image in (("ours, baseline", args.baseline), ("ours, this checkout", this)):
                def ours(worker_image=worker_image):
                    repo = os.path.join(work, "repo")
                    shutil.rmtree(repo, ignore_errors=True)
                    env = {**bench.env, "PYTHONPATH": worker_image}
                    procs.run([sys.executable, "-c", ENTRY, "repo", "init", "--repo", "file://" + repo],
                              env=env)
                    return measured(server, [sys.executable, "-c", ENTRY, "backup", "postgres",
                                             "--repo", "file://" + repo, *conn_args], env)
                peers[name] = ours
            runs: dict[str, list[dict]] = {name: [] for name in peers}
            for i in range(args.repeat):  # alternating: a busy machine slows every peer alike
                for name, peer in peers.items():
                    bench.checkpoint()
                    runs[name].append(peer())
                    r = runs[name][-1]
                    print(f"round {i + 1} {name}: wall {r['wall']:.2f} s, client CPU {r['client']:.2f} s, "
                          f"server CPU {r['server']:.2f} s, load {r['load']:.1f}", file=sys.stderr, flush=True)
            print(f"{tables} tables, median of {args.repeat} alternating runs (load: 1-minute average around each run)")
            print("| peer | wall s | client CPU s | server CPU s | total CPU s | load | wall runs |")
            print("|---|---|---|---|---|---|---|")
            med = {}
            for name, values in runs.items():
                m = {k: statistics.median(v[k] for v in values) for k in ("wall", "client", "server", "load")}
                m["total"] = statistics.median(v["client"] + v["server"] for v in values)
                med[name] = m
                print(f"| {name} | {m['wall']:.2f} | {m['client']:.2f} | {m['server']:.2f} | {m['total']:.2f} | "
                      f"{min(v['load'] for v in values):.0f}-{max(v['load'] for v in values):.0f} | "
                      f"{', '.join(format(v['wall'], '.2f') for v in values)} |")
            base = med["pg_dump -Fc"]
            for name in ("ours, baseline", "ours, this checkout"):
                print(f"{name} / pg_dump -Fc: wall {med[name]['wall'] / base['wall']:.2f}, "
                      f"total CPU {med[name]['total'] / base['total']:.2f}")
            return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
