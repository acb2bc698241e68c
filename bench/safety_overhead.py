"""What repository safety costs a backup: lock refreshes, pack trailers, the damage registry (issue 10).

Runs the same full backup (a table-like stream of COPY rows, `table` chunking, into an empty file://
repository with fsync, as the worker writes it) with this checkout's repository code and with another
checkout's (`--baseline`, e.g. a worktree of the commit before issue 10), alternating, and prints the
median wall times and their ratio. The lock is refreshed during the run (a short lifetime makes the
refresh thread write several times) and a damage record is present, so each cost is in the figure.

    git worktree add --detach /tmp/base <commit before issue 10>
    python bench/safety_overhead.py --baseline /tmp/base/worker_image [--mb 400] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, random, sys, time
from rdsbackup.repository import Repository

mb, repo_dir = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
names = [f"customer {i:06d}" for i in range(5000)]

def rows():
    out, size, i = [], 0, 0
    while size < mb * 1024 * 1024:
        line = f"{i}\t{rng.choice(names)}\t{rng.randint(1, 99999) / 100}\t2024-{1 + i % 12:02d}-{1 + i % 28:02d}\t" \
               f"{'note ' * rng.randint(0, 8)}\n".encode()
        out.append(line)
        size += len(line)
        i += 1
        if len(out) == 2000:
            yield b"".join(out)
            out = []
    if out:
        yield b"".join(out)

data = list(rows())
url = "file://" + repo_dir
repo = Repository.init(url, password="bench")
if os.environ.get("WITH_DAMAGE_RECORD"):
    from rdsbackup.repository.damage import record_damage
    record_damage(repo.backend, repo._keys, [{"pack": "00" * 16, "offset": 0, "problem": "bench"}], "bench")
repo = Repository.open(url, password="bench")
repo.lock_ttl = float(os.environ.get("LOCK_LIFETIME", "30"))
started = time.perf_counter()
cpu = time.process_time()
with repo.begin_backup(source_id="bench", engine="postgres") as writer:
    ref = writer.add_stream("t", iter(data), profile="table")
    writer.commit({"streams": {"t": ref}})
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                  "bytes": ref["size"], "chunks": ref["chunks"]}))
"""


def run(worker_image: str, mb: int, *, new: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="rdsbackup-safety-") as tmp:
        env = {**os.environ, "PYTHONPATH": worker_image, "LOCK_LIFETIME": "6"}
        if new:
            env["WITH_DAMAGE_RECORD"] = "1"
        out = subprocess.run([sys.executable, "-c", CHILD, str(mb), os.path.join(tmp, "repo")], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="worker_image directory of the code to compare with")
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "worker_image")
    runs: dict[str, list[dict]] = {"baseline": [], "this checkout": []}
    for _ in range(args.repeat):  # alternating, so a busy machine slows both alike
        runs["baseline"].append(run(args.baseline, args.mb, new=False))
        runs["this checkout"].append(run(here, args.mb, new=True))
    result = runs["this checkout"][-1]
    print(f"full backup of {result['bytes'] / 2**20:.0f} MiB table rows ({result['chunks']} chunks), "
          f"median of {args.repeat}, alternating (CPU: all threads of the process)")
    print("| code | median wall s | median CPU s | wall runs |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(v['seconds'] for v in values):.2f} | "
              f"{statistics.median(v['cpu'] for v in values):.2f} | "
              f"{', '.join(format(v['seconds'], '.2f') for v in values)} |")
    for what in ("seconds", "cpu"):
        base = statistics.median(v[what] for v in runs["baseline"])
        new = statistics.median(v[what] for v in runs["this checkout"])
        print(f"ratio this/baseline ({'wall' if what == 'seconds' else 'CPU'}): {new / base:.3f} "
              f"({(new / base - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
