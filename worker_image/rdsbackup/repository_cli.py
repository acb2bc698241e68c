"""The repository maintenance commands of `rdsbackup`: verify, forget, repair, repo upgrade, and the
`--lock-wait` option every command that takes a repository lock has.

Lock waits are reported as they happen on stderr (`rdsbackup: waiting up to N s for the lock on URL
held by ...`) and, with --json, listed under "lock_waits" in the printed document.
"""

from __future__ import annotations

import argparse
import json
import sys

PROG = "rdsbackup"


def print_json(doc) -> None:
    """One JSON document on stdout: indented on a terminal, on one line for a program. Python's C
    encoder cannot indent: a backup's document for 10,000 tables takes 0.2 s of CPU indented and
    0.04 s on one line."""
    if sys.stdout.isatty():
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        sys.stdout.write(json.dumps(doc, sort_keys=True, default=str))
    sys.stdout.write("\n")


def report_lock_wait(event: dict) -> None:
    print(f"{PROG}: {event['message']}", file=sys.stderr, flush=True)


def open_repository(url: str, args: argparse.Namespace | None = None):
    """Open the repository (a backup or an archive repository, whose passphrase comes from
    RDSBACKUP_ARCHIVE_PASSWORD when that is set); with `args`, its --lock-wait bound. Lock waits are
    reported on stderr."""
    from .repository.archive import open_any

    repo = open_any(url)
    repo.on_lock_wait = report_lock_wait
    lock_wait = getattr(args, "lock_wait", None) if args is not None else None
    if lock_wait is not None:
        repo.lock_wait = lock_wait
    return repo


def add_lock_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=_seconds, metavar="SECONDS",
                   help="wait at most this long for a conflicting repository lock (default: the lock "
                        "lifetime and a minute for backup, restore and verify; 0 for forget, prune and repair)")


def _seconds(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int, "a number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _one_line(text) -> str:
    return " ".join(str(text).split())


# --- commands -------------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from .cli import CliError, RetrievalPending, _human_bytes, _is_archive

    repo = open_repository(args.repo, args)
    if _is_archive(repo):
        from .repository.archive import verify_archive

        report = verify_archive(repo, args.restore_point, read_data=args.read_data)
    else:
        report = repo.verify(args.restore_point, read_data=args.read_data)
    report["lock_waits"] = repo.lock_waits
    errors = report.get("errors") or []
    waiting = report.get("needs_retrieval") or []
    if args.json:
        print_json(report)
    else:
        for err in errors:
            print(f"error: {err}")
        for w in waiting:
            print(f"needs retrieval: pack {w['pack']} of restore point {w['restore_point_id']} "
                  f"({_human_bytes(w['bytes'])}, {w['storage_class']}, retrieval {w['retrieval']})")
        for item in report.get("damaged", []):
            points = ", ".join(item["restore_points"]) or "none"
            print(f"damaged: {item['object']}: {item['problem']} (restore points affected: {points})")
        checked = {k: v for k, v in report.items() if k not in ("errors", "damaged", "lock_waits")
                   and isinstance(v, int | float | str)}
        print("verify: " + ", ".join(f"{k} {v}" for k, v in checked.items()) if checked else "verify: done")
    if errors:
        raise CliError(f"verify found {len(errors)} error(s); first: {_one_line(errors[0])}")
    if waiting:
        points = sorted({w["restore_point_id"] for w in waiting})
        size = _human_bytes(report["needs_retrieval_bytes"])
        raise RetrievalPending(f"verify --read-data: {len(waiting)} packs ({size}) "
                               f"of restore points {', '.join(points)} need a retrieval before their data can be read; "
                               "the rest verified")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Forget, then prune, under one exclusive lock taken first: a lock conflict fails the command
    before any restore point is forgotten."""
    from .cli import CliError, _is_archive

    repo = open_repository(args.repo, args)
    if _is_archive(repo):
        return _forget_archived(args, repo)
    if args.keep_weekly or args.keep_monthly or args.keep_yearly:
        raise CliError("--keep-weekly/--keep-monthly/--keep-yearly apply to archive repositories")
    with repo.exclusive_lock("forget"):
        if args.restore_point:
            removed = repo.forget_restore_points(args.restore_point)
        else:
            removed = repo.forget(keep_last=args.keep_last, keep_days=args.keep_days)
        pruned = repo.prune(unsafe_disk_full=args.disk_full)
    if args.json:
        print_json({"forgotten": removed, "prune": pruned, "lock_waits": repo.lock_waits})
    else:
        print(f"forgot {len(removed)} restore point(s)" + (": " + ", ".join(removed) if removed else ""))
        _print_prune(pruned)
    return 0


def _forget_archived(args: argparse.Namespace, repo) -> int:
    from .cli import CliError
    from .repository.archive import forget_archived
    from .repository.gfs import gfs_keep

    if args.keep_days is None:
        raise CliError("an archive repository keeps archived points by age: give --keep-days")
    keep = None
    if args.keep_weekly or args.keep_monthly or args.keep_yearly:
        def keep(points):
            return gfs_keep(points, weekly=args.keep_weekly, monthly=args.keep_monthly, yearly=args.keep_yearly)
    result = forget_archived(repo, retention_days=args.keep_days, keep=keep)
    if args.json:
        print_json(result)
    else:
        print(f"deleted {len(result['deleted'])} archived restore point(s)"
              + (": " + ", ".join(result["deleted"]) if result["deleted"] else ""))
        for item in result["locked"]:
            print(f"kept {item['restore_point_id']}: under Object Lock until {item['retain_until']}")
        if result["early_deletion_charge_usd"]:
            print(f"early-deletion charge (list-price estimate): ${result['early_deletion_charge_usd']:.4f}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo, args)
    pruned = repo.prune(unsafe_disk_full=args.disk_full)
    if args.json:
        print_json({"prune": pruned, "lock_waits": repo.lock_waits})
    else:
        _print_prune(pruned)
    return 0


def _print_prune(pruned: dict) -> None:
    for warning in pruned.get("warnings", []):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print("prune: " + ", ".join(f"{k} {v}" for k, v in pruned.items() if not isinstance(v, list | dict)))


def cmd_repair(args: argparse.Namespace) -> int:
    from .repository.repair import repair_index, repair_packs, repair_points

    repo = open_repository(args.repo, args)
    if args.what == "index":
        result = repair_index(repo)
    elif args.what == "packs":
        result = repair_packs(repo)
    else:
        result = repair_points(repo, forget=args.forget)
    result["lock_waits"] = repo.lock_waits
    if args.json:
        print_json(result)
    else:
        for line in result.get("report", []):
            print(line)
        print(f"repair {args.what}: " + ", ".join(
            f"{k} {v}" for k, v in result.items() if not isinstance(v, list | dict)))
    return 0


def cmd_repo_upgrade(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo, args)
    result = repo.upgrade()
    if args.json:
        print_json(result)
    else:
        print(f"repository {args.repo}: format version {result['from_version']} -> {result['version']}, "
              f"{result['packs_rewritten']} pack(s) rewritten with trailers")
    return 0


# --- parsers --------------------------------------------------------------------------------------------


def add_repo_upgrade_parser(repo_sub) -> None:
    upgrade = repo_sub.add_parser("upgrade", help="rewrite a format 1 repository as format 2 (self-describing "
                                  "packs; see docs/repository-format.md)")
    upgrade.add_argument("--repo", required=True, metavar="URL")
    add_lock_wait(upgrade)
    upgrade.add_argument("--json", action="store_true")
    upgrade.set_defaults(func=cmd_repo_upgrade)


def add_parsers(sub) -> None:
    """verify, forget, prune and repair."""
    verify = sub.add_parser("verify", help="check the repository")
    verify.add_argument("--repo", required=True, metavar="URL")
    verify.add_argument("--restore-point", metavar="ID")
    verify.add_argument("--read-data", action="store_true", help="read and authenticate every byte")
    add_lock_wait(verify)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

    disk_full = ("run on a full disk: take no lock (nothing else may use the repository meanwhile) and "
                 "delete unreferenced packs before writing the new index when a write fails for lack of "
                 "space (see docs/repository-format.md)")
    forget = sub.add_parser("forget", help="drop restore points, then prune unreferenced data")
    forget.add_argument("--repo", required=True, metavar="URL")
    keep = forget.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep-last", type=_positive_int, metavar="N")
    keep.add_argument("--keep-days", type=_positive_int, metavar="N")
    keep.add_argument("--restore-point", action="extend", nargs="+", metavar="ID",
                      help="drop exactly these restore points")
    for period in ("weekly", "monthly", "yearly"):
        forget.add_argument(f"--keep-{period}", type=_positive_int, metavar="N",
                            help=f"archive repositories: also keep the newest point of each of the last N "
                                 f"{ {'weekly': 'weeks', 'monthly': 'months', 'yearly': 'years'}[period] } (GFS)")
    forget.add_argument("--disk-full", action="store_true", help=disk_full)
    add_lock_wait(forget)
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(func=cmd_forget)

    prune = sub.add_parser("prune", help="delete data no restore point references")
    prune.add_argument("--repo", required=True, metavar="URL")
    prune.add_argument("--disk-full", action="store_true", help=disk_full)
    add_lock_wait(prune)
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(func=cmd_prune)

    repair = sub.add_parser("repair", help="rebuild the index from the packs, salvage damaged packs, or "
                            "deal with restore points that reference lost data")
    repair.add_argument("what", choices=("index", "packs", "points"),
                        help="index: rebuild it from the pack trailers; packs: read every pack, keep what "
                             "authenticates, record the rest as damaged; points: mark (or with --forget "
                             "remove) restore points that reference lost data")
    repair.add_argument("--repo", required=True, metavar="URL")
    repair.add_argument("--forget", action="store_true",
                        help="repair points: remove the damaged restore points instead of marking them")
    add_lock_wait(repair)
    repair.add_argument("--json", action="store_true")
    repair.set_defaults(func=cmd_repair)
