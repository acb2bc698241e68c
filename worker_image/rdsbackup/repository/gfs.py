"""GFS (grandfather-father-son) selection of archived restore points, as Veeam's archive tier and
restic's `--keep-weekly/monthly/yearly` offer it.

For each period kind with a count N: the points are grouped by calendar period (ISO week, month,
year, in UTC, of the backup time); the newest point of each of the N newest periods that have a point
is kept. The kinds add up: a point kept as a month's point and a week's point is kept once. Points not
selected are deleted once they are older than the archive's retention_days.
"""

from __future__ import annotations

from datetime import UTC, datetime

PERIODS = {
    "weekly": lambda t: t.strftime("%G-W%V"),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}


def _when(point: dict) -> datetime:
    return datetime.strptime(point["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def gfs_keep(points: list[dict], *, weekly: int | None = None, monthly: int | None = None,
             yearly: int | None = None) -> set[str]:
    """Ids of the points the selection keeps (`points`: {"id", "time"} dicts, any order)."""
    counts = {"weekly": weekly or 0, "monthly": monthly or 0, "yearly": yearly or 0}
    newest_first = sorted(points, key=lambda p: (p["time"], p["id"]), reverse=True)
    kept: set[str] = set()
    for kind, count in counts.items():
        if count <= 0:
            continue
        seen: list[str] = []
        for point in newest_first:
            period = PERIODS[kind](_when(point))
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            kept.add(point["id"])
    return kept
