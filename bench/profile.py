"""Where the worker's time goes: loads shop.sql as `run.py` does, then runs one full
`rdsbackup backup postgres` and one `rdsbackup restore postgres` under `py-spy record` (all threads of
the Python worker, on-CPU samples only; py-spy cannot see into pg_dump/pg_restore), and prints the
functions with the most samples, self and inclusive.

    pip install py-spy && python bench/profile.py      # writes bench/results/profile-{backup,restore}.txt

Same environment variables as run.py. Cleans up after itself like run.py.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import procs  # noqa: E402
import run  # noqa: E402


def summarize(raw_path: str, top: int = 25) -> str:
    """Text summary of py-spy's collapsed stacks (`frame;frame;... count` per line)."""
    self_counts: collections.Counter = collections.Counter()
    incl_counts: collections.Counter = collections.Counter()
    by_process: collections.Counter = collections.Counter()
    total = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            by_process[frames[0].split(" ")[0] if frames else "?"] += n
            self_counts[frames[-1]] += n
            for frame in set(frames[1:]):
                incl_counts[frame] += n
    out = [f"{total} samples", "", "by process (first frame):"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in by_process.most_common(10)]
    out += ["", "self:"] + [f"  {n / total:6.1%}  {name}" for name, n in self_counts.most_common(top)]
    out += ["", "inclusive:"] + [f"  {n / total:6.1%}  {name}" for name, n in incl_counts.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    if not shutil.which("py-spy"):
        sys.exit("py-spy not found: pip install py-spy")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    work = tempfile.mkdtemp(prefix="rdsbackup-profile-", dir=os.environ.get("RDSBACKUP_BENCH_TMPDIR"))
    server = None
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    try:
        server = run.PostgresServer.start()
        bench = run.Bench(server, work)
        bench.load(run.data_path("RDSBACKUP_BENCH_SHOP_SQL", "shop.sql"))
        url = bench.init_ours("ours")
        spy = ["py-spy", "record", "--subprocesses", "--threads", "--nonblocking", "--rate", "200",
               "--format", "raw"]
        raw = os.path.join(out_dir, "profile-backup.raw")
        bench.checkpoint()
        res = procs.run([*spy, "-o", raw, "--", shutil.which("rdsbackup") or "rdsbackup",
                         *bench.rdsbackup_backup_args(url)], env=bench.env)
        # py-spy prints its own lines after the worker's JSON document.
        rp = run.json.JSONDecoder().raw_decode(res.stdout[res.stdout.index("{"):])[0]["restore_point_id"]
        text = f"full backup: {res.seconds:.1f} s wall\n" + summarize(raw)
        with open(os.path.join(out_dir, "profile-backup.txt"), "w") as f:
            f.write(text)
        print(text)

        raw = os.path.join(out_dir, "profile-restore.raw")
        bench.checkpoint()
        res = procs.run([*spy, "-o", raw, "--", shutil.which("rdsbackup") or "rdsbackup", "restore", "postgres",
                         "--repo", url, "--restore-point", rp, "--host", server.host, "--port", str(server.port),
                         "--user", server.superuser, "--password-env", "BENCH_PGPASSWORD", "--database", run.DB,
                         "--target-database", "restored", *bench.jobs_args], env=bench.env)
        text = f"restore: {res.seconds:.1f} s wall\n" + summarize(raw)
        with open(os.path.join(out_dir, "profile-restore.txt"), "w") as f:
            f.write(text)
        print(text)
        return 0
    except KeyboardInterrupt:
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
