"""`rdsbackup`: the operator CLI and the worker's entry point (contract in DESIGN.md).

Exit codes: 0 ok, 1 failure (one line on stderr, no traceback), 2 usage error (argparse), 75 an archived
restore point's packs are being retrieved from Glacier: run again later (or pass --wait).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .repository_cli import _positive_int, print_json

PROG = "rdsbackup"
# EX_TEMPFAIL (sysexits.h): not a failure, try again later. A restore from an archive exits with it
# while the packs it needs are still being retrieved.
EXIT_RETRIEVAL_PENDING = 75


class CliError(Exception):
    """A failure the CLI reports as one line and exit code 1."""


# --- credentials ----------------------------------------------------------------------------------------


def secret_credentials(arn: str) -> dict:
    """Read database credentials from Secrets Manager: a JSON secret with `password` and maybe
    `username`, `host`, `port` (the shape RDS-managed secrets have), or a bare password string."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parts = arn.split(":")
    region = parts[3] if arn.startswith("arn:") and len(parts) > 3 and parts[3] else None
    try:
        client = boto3.client("secretsmanager", region_name=region)
        response = client.get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise CliError(f"cannot read secret {arn}: {code}") from None
    except BotoCoreError as exc:
        raise CliError(f"cannot read secret {arn}: {exc}") from None
    text = response.get("SecretString")
    if text is None:
        raise CliError(f"secret {arn} holds binary data, not a password")
    try:
        data = json.loads(text)
    except ValueError:
        return {"password": text}
    if not isinstance(data, dict) or not data.get("password"):
        raise CliError(f"secret {arn} has no 'password' field")
    return data


def db_credentials(args: argparse.Namespace, default_port: int) -> tuple[str, int, str, str]:
    """(host, port, user, password) from --host/--port/--user and --password-env or --secret-arn (the
    command line wins over the secret for host, port and user)."""
    secret: dict = {}
    if args.secret_arn:
        secret = secret_credentials(args.secret_arn)
        password = secret["password"]
    else:
        password = os.environ.get(args.password_env)
        if password is None:
            raise CliError(f"environment variable {args.password_env} (--password-env) is not set")
    host = args.host or secret.get("host")
    user = args.user or secret.get("username") or secret.get("user")
    port = args.port or secret.get("port") or default_port
    if not host:
        raise CliError("no database host: give --host (or a secret with 'host')")
    if not user:
        raise CliError("no database user: give --user (or a secret with 'username')")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise CliError(f"bad port {port!r}") from None
    return host, port, user, password


def connection_from_args(args: argparse.Namespace):
    """PostgreSQL ConnectionInfo from the command line (see `db_credentials`)."""
    from .postgres import ConnectionInfo

    host, port, user, password = db_credentials(args, 5432)
    return ConnectionInfo(host=host, port=port, user=user, password=password, ssl_mode=args.ssl_mode,
                          ca_bundle=args.ca_bundle)


# --- repository -----------------------------------------------------------------------------------------


def open_repository(url: str, args: argparse.Namespace | None = None):
    """A backup repository, or an archive repository (its passphrase from RDSBACKUP_ARCHIVE_PASSWORD
    when that is set); with `args`, its --lock-wait and lock-wait messages on stderr."""
    from .repository_cli import open_repository as open_with_lock_options

    return open_with_lock_options(url, args)


def _is_archive(repo) -> bool:
    from .repository.archive import ArchiveRepository

    return isinstance(repo, ArchiveRepository)


class RetrievalPending(Exception):
    """Packs of an archived restore point are not readable yet (exit EXIT_RETRIEVAL_PENDING)."""


def retrieval_summary(states) -> str:
    from .repository.retrieval import ARCHIVED, READY

    waiting = [s for s in states if s.state != READY]
    size = sum(s.size for s in waiting)
    requested = sum(1 for s in waiting if s.state != ARCHIVED)
    return (f"{len(waiting)} of {len(states)} packs ({_human_bytes(size)}) are being retrieved from "
            f"{', '.join(sorted({s.storage_class for s in waiting}))} ({requested} requests running)")


def ready_to_restore(args: argparse.Namespace, repo, rp_id: str):
    """The repository to restore `rp_id` from: itself for a backup repository; for an archive, the
    point's own view once its packs are readable. Asks for the retrieval of archived packs (tier
    --retrieval-tier), then waits with --wait or raises RetrievalPending."""
    import time

    from .repository.retrieval import READY, request_retrieval

    if not _is_archive(repo):
        return repo
    view = repo.for_point(rp_id)
    deadline = time.monotonic() + args.wait_timeout * 3600
    while True:
        states = view.pack_states(rp_id)
        if all(s.state == READY for s in states):
            return view
        requested = request_retrieval(view.backend, states, tier=args.retrieval_tier, days=args.retrieval_days)
        summary = retrieval_summary(states)
        if requested:
            summary += f"; {requested} retrieval requests made now (tier {args.retrieval_tier})"
        if not args.wait:
            raise RetrievalPending(f"restore point {rp_id}: {summary}; run again later, or pass --wait")
        if time.monotonic() >= deadline:
            raise CliError(f"restore point {rp_id}: still waiting after {args.wait_timeout} h: {summary}")
        print(f"{PROG}: waiting: {summary}", file=sys.stderr, flush=True)
        time.sleep(args.wait_interval)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _warn(warnings: Sequence[str]) -> None:
    for w in warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)


# --- commands -------------------------------------------------------------------------------------------


def cmd_repo_init(args: argparse.Namespace) -> int:
    from .repository import Repository

    password = None
    env = "RDSBACKUP_ARCHIVE_PASSWORD" if args.archive else "RDSBACKUP_PASSWORD"
    if not args.kms_key_id:
        password = os.environ.get(env)
        if not password:
            raise CliError(f"set {env} (the repository passphrase) or give --kms-key-id")
    Repository.init(args.repo, kms_key_id=args.kms_key_id, password=password, kind="archive" if args.archive else None)
    print(f"initialized {'archive ' if args.archive else ''}repository {args.repo}")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_archive(args: argparse.Namespace) -> int:
    import signal

    from .errors import RepositoryNotFound
    from .repository.archive import ArchiveRepository, archive_restore_point

    source = open_repository(args.repo)
    if _is_archive(source):
        raise CliError(f"--repo {args.repo} is an archive repository; archive from the backup repository")
    for rp_id in args.restore_point:
        source.load_manifest(rp_id)  # a wrong id fails before anything is created
    try:
        archive = ArchiveRepository.open_archive(args.archive_repo)
    except RepositoryNotFound:
        if not args.archive_kms_key_id and not os.environ.get("RDSBACKUP_ARCHIVE_PASSWORD"):
            raise CliError(f"no archive repository at {args.archive_repo}: set RDSBACKUP_ARCHIVE_PASSWORD or give "
                           "--archive-kms-key-id to create it") from None
        archive = ArchiveRepository.init_archive(args.archive_repo, kms_key_id=args.archive_kms_key_id,
                                                 ids_of=source._keys)
    # ECS stops a task with SIGTERM: unwind like Ctrl-C so the copy deletes what it wrote.
    signal.signal(signal.SIGTERM, _interrupt)
    results = []
    for rp_id in args.restore_point:
        results.append(archive_restore_point(source, archive, rp_id, storage_class=args.storage_class))
    if args.json:
        print_json(results if len(results) > 1 else results[0])
    else:
        for r in results:
            if not r["archived"]:
                print(f"restore point {r['restore_point_id']}: already archived")
            else:
                print(f"restore point {r['restore_point_id']}: archived, {r['packs']} packs, "
                      f"{_human_bytes(r['stored_bytes'])} in {r['storage_class']} in {r['duration_seconds']:.1f} s")
    return 0


def _report_backup(args: argparse.Namespace, result: dict, contents: str) -> int:
    """A finished backup: its warnings on stderr, then the result as JSON or one line for people."""
    _warn(result.get("warnings", []))
    if args.json:
        print_json(result)
    else:
        print(f"restore point {result['restore_point_id']}: {contents}, "
              f"{_human_bytes(result['bytes'])} ({_human_bytes(result['new_bytes'])} new) "
              f"in {result['duration_seconds']:.1f} s")
    return 0


def cmd_backup_postgres(args: argparse.Namespace) -> int:
    from .postgres import backup_postgres
    from .progress import reporter_for

    info = connection_from_args(args)
    repo = open_repository(args.repo, args)
    reporter = reporter_for("backup", enabled=sys.stdout.isatty() and not args.json)
    try:
        result = backup_postgres(repo, info, databases=args.database or None, source_id=args.source_id,
                                 jobs=args.jobs, reporter=reporter, key_order=args.key_order,
                                 lock_timeout=args.lock_wait_timeout)
    finally:
        reporter.close()
    if repo.lock_waits:
        result["lock_waits"] = repo.lock_waits
    tables = sum(len(d["tables"]) for d in result["databases"])
    return _report_backup(args, result, f"{len(result['databases'])} databases, {tables} tables")


def cmd_backup_sqlserver(args: argparse.Namespace) -> int:
    from .progress import reporter_for
    from .sqlserver import PollPolicy, backup_sqlserver
    from .sqlserver.connection import factory_from_env

    info = _sqlserver_info(args)
    repo = open_repository(args.repo, args)
    prefix = args.temp_prefix if args.temp_prefix is not None else f"rdsbackup/{os.urandom(6).hex()}/"
    reporter = reporter_for("backup", enabled=sys.stdout.isatty() and not args.json)
    try:
        result = backup_sqlserver(repo, info, temp_bucket=args.temp_bucket, temp_prefix=prefix,
                                  databases=args.database or None, source_id=args.source_id,
                                  kms_key_arn=args.kms_master_key_arn, connect=factory_from_env(),
                                  poll=PollPolicy.from_env(args.task_timeout), reporter=reporter)
    finally:
        reporter.close()
    return _report_backup(args, result, f"{len(result['databases'])} databases")


def _sqlserver_info(args: argparse.Namespace):
    from .sqlserver import SqlServerInfo

    host, port, user, password = db_credentials(args, 1433)
    return SqlServerInfo(host=host, port=port, user=user, password=password, ca_bundle=args.ca_bundle)


def _restore(args: argparse.Namespace, restore) -> dict:
    """Open --repo (for an archived point: once its packs are retrieved), then run `restore(repo, reporter)`
    under a shared restore lock, so that no prune repacks the restore point's data away meanwhile, with
    progress shown on a terminal. Warnings go to stderr; the result carries any lock waits."""
    from .progress import reporter_for

    repo = ready_to_restore(args, open_repository(args.repo, args), args.restore_point)
    reporter = reporter_for("restore", enabled=sys.stdout.isatty() and not args.json)
    try:
        with repo.shared_lock("restore", f"restore of {args.restore_point}"):
            result = restore(repo, reporter)
    finally:
        reporter.close()
    if repo.lock_waits:
        result["lock_waits"] = repo.lock_waits
    _warn(result.get("warnings", []))
    return result


def cmd_restore_sqlserver(args: argparse.Namespace) -> int:
    from .sqlserver import PollPolicy, restore_sqlserver
    from .sqlserver.connection import factory_from_env

    info = _sqlserver_info(args)
    prefix = args.temp_prefix if args.temp_prefix is not None else f"rdsbackup/{os.urandom(6).hex()}/"
    result = _restore(args, lambda repo, reporter: restore_sqlserver(
        repo, args.restore_point, info, temp_bucket=args.temp_bucket, temp_prefix=prefix, database=args.database,
        target_database=args.target_database, replace=args.replace, kms_key_arn=args.kms_master_key_arn,
        connect=factory_from_env(), poll=PollPolicy.from_env(args.task_timeout), reporter=reporter))
    if args.json:
        print_json(result)
    else:
        for db in result["databases"]:
            print(f"restored database {db['name']} as {db['target']}"
                  + (" (replacing the existing one)" if db["replaced"] else ""))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from .job import main as job_main

    return job_main()


def cmd_maintain(args: argparse.Namespace) -> int:
    from .maintenance import main as maintenance_main

    return maintenance_main()


def cmd_restore_postgres(args: argparse.Namespace) -> int:
    from .postgres import restore_postgres

    info = connection_from_args(args)
    result = _restore(args, lambda repo, reporter: restore_postgres(
        repo, args.restore_point, info, database=args.database, target_database=args.target_database,
        include_globals=args.include_globals, replace=args.replace, jobs=args.jobs, reporter=reporter,
        maintenance_work_mem=args.maintenance_work_mem, security_labels=not args.no_security_labels))
    if args.json:
        print_json(result)
    else:
        for db in result["databases"]:
            print(f"restored database {db['name']} as {db['target']}: {db['tables']} tables, {db['rows']} rows, "
                  f"{db['large_objects']} large objects")
    return 0


def _add_sqlserver_connection(parser: argparse.ArgumentParser, bucket_use: str) -> None:
    """The SQL Server endpoint, its credentials and the temporary bucket RDS `bucket_use` (backup and restore)."""
    parser.add_argument("--host", help="database endpoint (or from --secret-arn)")
    parser.add_argument("--port", type=int, help="database port (default 1433, or from --secret-arn)")
    parser.add_argument("--user", help="database user (or from --secret-arn)")
    creds = parser.add_mutually_exclusive_group(required=True)
    creds.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    creds.add_argument("--secret-arn", metavar="ARN", help="Secrets Manager secret with the credentials")
    parser.add_argument("--ca-bundle", metavar="PEM", help="verify the server's TLS certificate against these CAs "
                        "(default: $RDSBACKUP_CA_BUNDLE; an empty value turns TLS off)")
    parser.add_argument("--temp-bucket", required=True, metavar="BUCKET",
                        help=f"S3 bucket (in the DB's region) that RDS {bucket_use}")
    parser.add_argument("--temp-prefix", metavar="PREFIX", help="key prefix in it (default: rdsbackup/<random>/)")
    parser.add_argument("--task-timeout", type=_positive_int, metavar="SECONDS",
                        help="give up on a native task after this long (default 12 h)")
    parser.add_argument("--kms-master-key-arn", metavar="ARN", help="KMS key of the .bak files")


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def cmd_validate_postgres(args: argparse.Namespace) -> int:
    """A restore test's check of a restored server: against a restore point's recorded row counts and
    table digests (--restore-point), or engine, databases and amcheck (a restored snapshot)."""
    from .postgres.validate import check_server, validate_restore_point

    info = connection_from_args(args)
    repo = open_repository(args.repo) if args.repo else None
    if args.restore_point and repo is None:
        return _usage_error("--restore-point needs --repo")
    if args.snapshot:
        recorded = None
        if args.restore_point:
            from .postgres.restore import restore_point_metadata
            recorded = restore_point_metadata(repo.load_manifest(args.restore_point))
        result = check_server(info, databases=args.database or None, amcheck=not args.no_amcheck,
                              recorded=recorded)
        failures = result["problems"]
    else:
        if not args.restore_point:
            return _usage_error("give --restore-point (or --snapshot for a restored snapshot)")
        result = validate_restore_point(repo, args.restore_point, info,
                                        database=args.database[0] if args.database else None,
                                        target_database=args.target_database)
        failures = [f"database {d['database']}, table {d['table']}: {d['reason']}" if d["table"]
                    else f"database {d['database']}: {d['reason']}" for d in result["differences"]]
    if args.json:
        print_json(result)
    else:
        print(f"validation {result['status']}")
    if failures:
        print("validation failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def cmd_not_implemented(args: argparse.Namespace) -> int:
    raise CliError(f"'{args.command_name}' is not implemented yet")


def _rp_field(rp: dict, *names: str, default=""):
    for name in names:
        if rp.get(name) is not None:
            return rp[name]
    meta = rp.get("metadata") or {}
    for name in names:
        if meta.get(name) is not None:
            return meta[name]
    return default


def _summary(rp: dict) -> dict:
    """A restore point without its per-table details (those stay in the manifest)."""
    out = {k: v for k, v in rp.items() if k not in ("databases", "globals")}
    if isinstance(rp.get("databases"), list):
        out["databases"] = [d.get("name") for d in rp["databases"] if isinstance(d, dict)]
    return out


def cmd_list(args: argparse.Namespace) -> int:
    repo = open_repository(args.repo)
    points = [_summary(p) for p in repo.list_restore_points(source_id=args.source_id)]
    if args.json:
        print_json(points)
        return 0
    if not points:
        print("no restore points")
        return 0
    print(f"{'ID':<28} {'SOURCE':<24} {'ENGINE':<10} {'CREATED':<22} SIZE")
    for rp in points:
        size = _rp_field(rp, "bytes", "size", default=None)
        print(f"{_rp_field(rp, 'id', 'restore_point_id')!s:<28} {_rp_field(rp, 'source_id')!s:<24} "
              f"{_rp_field(rp, 'engine')!s:<10} {_rp_field(rp, 'created', 'ended', 'time')!s:<22} "
              f"{_human_bytes(size) if isinstance(size, int | float) else ''}")
    return 0


# --- parser ---------------------------------------------------------------------------------------------





def _add_db_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="database endpoint (or from --secret-arn)")
    p.add_argument("--port", type=int, help="database port (default 5432, or from --secret-arn)")
    p.add_argument("--user", help="database user (or from --secret-arn)")
    creds = p.add_mutually_exclusive_group(required=True)
    creds.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    creds.add_argument("--secret-arn", metavar="ARN", help="Secrets Manager secret with the credentials")
    p.add_argument("--ssl-mode", choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
                   help="TLS to the database (default: verify-full when a CA bundle is given or "
                        "$RDSBACKUP_CA_BUNDLE is set, else libpq's default)")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA certificates that verify the server "
                   "(default: $RDSBACKUP_CA_BUNDLE; the worker image holds the RDS global bundle)")
    p.add_argument("--jobs", type=_positive_int, default=4, help="parallel table copies (default 4)")


def _add_retrieval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retrieval-tier", choices=("Standard", "Bulk", "Expedited"), default="Standard",
                   help="restoring from an archive: S3 retrieval tier for its Glacier packs (default Standard; "
                        "Deep Archive offers Standard and Bulk)")
    p.add_argument("--retrieval-days", type=_positive_int, default=3, metavar="N",
                   help="days the retrieved copies stay readable (default 3)")
    p.add_argument("--wait", action="store_true", help="wait for the retrieval instead of exiting with "
                   f"code {EXIT_RETRIEVAL_PENDING}")
    p.add_argument("--wait-interval", type=_positive_int, default=600, metavar="SECONDS",
                   help="seconds between retrieval checks with --wait (default 600)")
    p.add_argument("--wait-timeout", type=_positive_int, default=48, metavar="HOURS",
                   help="give up waiting after this many hours (default 48)")


def build_parser() -> argparse.ArgumentParser:
    from .repository_cli import add_lock_wait, add_repo_upgrade_parser
    from .repository_cli import add_parsers as add_repository_parsers

    parser = argparse.ArgumentParser(prog=PROG, description="Image-level backups of RDS databases.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    repo = sub.add_parser("repo", help="repository administration")
    repo_sub = repo.add_subparsers(dest="repo_command", required=True, metavar="COMMAND")
    init = repo_sub.add_parser("init", help="create a repository")
    init.add_argument("--repo", required=True, metavar="URL", help="s3://bucket/prefix or file:///path")
    init.add_argument("--kms-key-id", metavar="ID", help="wrap the master key with this KMS key "
                      "(default: a passphrase from RDSBACKUP_PASSWORD)")
    init.add_argument("--archive", action="store_true", help="an archive repository (its passphrase from "
                      "RDSBACKUP_ARCHIVE_PASSWORD); `rdsbackup archive` creates one when it is missing")
    init.set_defaults(func=cmd_repo_init)
    add_repo_upgrade_parser(repo_sub)

    backup = sub.add_parser("backup", help="back up a database server")
    backup_sub = backup.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    bpg = backup_sub.add_parser("postgres", help="every database of a PostgreSQL server, plus its roles")
    bpg.add_argument("--repo", required=True, metavar="URL")
    _add_db_connection(bpg)
    bpg.add_argument("--database", action="extend", nargs="+", metavar="NAME",
                     help="only these databases (default: all but templates and rdsadmin)")
    bpg.add_argument("--source-id", metavar="ID", help="name of the source in the repository (default: host)")
    bpg.add_argument("--json", action="store_true", help="print the restore point as one JSON document")
    bpg.add_argument("--no-key-order", dest="key_order", action="store_false",
                     help="stream table rows in physical order, not primary-key order (faster to read, "
                          "but an incremental backup then stores far more)")
    bpg.add_argument("--lock-wait-timeout", metavar="SECONDS", type=float, default=120.0,
                     help="how long to wait for the tables' ACCESS SHARE locks before failing with the name "
                          "of the table and of the session holding it (0: wait forever; default 120)")
    add_lock_wait(bpg)
    bpg.set_defaults(func=cmd_backup_postgres)
    bss = backup_sub.add_parser("sqlserver", help="SQL Server (RDS native backup through a temporary bucket)")
    bss.add_argument("--repo", required=True, metavar="URL")
    _add_sqlserver_connection(bss, "writes the .bak files into")
    bss.add_argument("--database", action="extend", nargs="+", metavar="NAME",
                     help="only these databases (default: every online user database)")
    bss.add_argument("--source-id", metavar="ID", help="name of the source in the repository (default: host)")
    bss.add_argument("--json", action="store_true", help="print the restore point as one JSON document")
    add_lock_wait(bss)
    bss.set_defaults(func=cmd_backup_sqlserver)

    lst = sub.add_parser("list", help="list restore points")
    lst.add_argument("--repo", required=True, metavar="URL")
    lst.add_argument("--source-id", metavar="ID")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    restore = sub.add_parser("restore", help="restore into a database server")
    restore_sub = restore.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    rpg = restore_sub.add_parser("postgres", help="restore a PostgreSQL restore point")
    rpg.add_argument("--repo", required=True, metavar="URL")
    rpg.add_argument("--restore-point", required=True, metavar="ID")
    _add_db_connection(rpg)
    rpg.add_argument("--database", metavar="NAME", help="only this database of the restore point")
    rpg.add_argument("--target-database", metavar="NAME", help="restore it under this name")
    rpg.add_argument("--include-globals", action="store_true", help="also restore roles and memberships")
    rpg.add_argument("--replace", action="store_true",
                     help="replace a target that is not empty: restored beside it, verified, then swapped in by "
                          "renaming; the old one is dropped only after (warns before terminating its sessions)")
    rpg.add_argument("--no-security-labels", action="store_true",
                     help="leave security labels out (as pg_restore --no-security-labels): for a target server "
                          "that does not load their providers, where a label fails the restore")
    rpg.add_argument("--maintenance-work-mem", metavar="SIZE", default="256MB",
                     help="maintenance_work_mem of the sessions that build indexes and check constraints "
                          "after the data (default 256MB, each of --jobs sessions)")
    _add_retrieval(rpg)
    rpg.add_argument("--json", action="store_true")
    add_lock_wait(rpg)
    rpg.set_defaults(func=cmd_restore_postgres)
    rss = restore_sub.add_parser("sqlserver", help="restore a SQL Server restore point (RDS native restore "
                                 "through a temporary bucket)")
    rss.add_argument("--repo", required=True, metavar="URL")
    rss.add_argument("--restore-point", required=True, metavar="ID")
    _add_sqlserver_connection(rss, "reads the .bak files from")
    rss.add_argument("--database", metavar="NAME", help="only this database of the restore point")
    rss.add_argument("--target-database", metavar="NAME", help="restore it under this name")
    rss.add_argument("--replace", action="store_true", help="overwrite a database that exists (the old one is "
                     "dropped only once the new one is restored)")
    rss.add_argument("--json", action="store_true")
    add_lock_wait(rss)
    rss.set_defaults(func=cmd_restore_sqlserver)

    validate = sub.add_parser("validate", help="check a restored server (restore tests)")
    validate_sub = validate.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    vpg = validate_sub.add_parser("postgres", help="compare with a restore point's recorded row counts and "
                                  "digests, or (--snapshot) check engine, databases and indexes")
    vpg.add_argument("--repo", metavar="URL")
    vpg.add_argument("--restore-point", metavar="ID", help="the restore point that was restored (or, with "
                     "--snapshot, one of the same source whose row counts are reported beside)")
    _add_db_connection(vpg)
    vpg.add_argument("--database", metavar="NAME", action="append", help="the recorded database (with "
                     "--snapshot: a database that must exist; repeatable)")
    vpg.add_argument("--target-database", metavar="NAME", help="the name it was restored under")
    vpg.add_argument("--snapshot", action="store_true", help="a restored snapshot: engine, databases, amcheck")
    vpg.add_argument("--no-amcheck", action="store_true", help="skip bt_index_check")
    vpg.add_argument("--json", action="store_true")
    vpg.set_defaults(func=cmd_validate_postgres)

    add_repository_parsers(sub)

    job = sub.add_parser("job", help="run one worker job: the spec is JSON in $RDSBACKUP_JOB (see "
                         "docs/state-machine-contract.md); the result goes to its result_url")
    job.set_defaults(func=cmd_job)

    maintain = sub.add_parser("maintain", help="the backup-account session's job: archive, retention (forget, "
                              "prune), archive retention; the spec is JSON in $RDSBACKUP_JOB (see "
                              "docs/state-machine-contract.md)")
    maintain.set_defaults(func=cmd_maintain)

    archive = sub.add_parser("archive", help="copy restore points into an archive repository as self-contained "
                             "fulls (the archive's passphrase from RDSBACKUP_ARCHIVE_PASSWORD)")
    archive.add_argument("--repo", required=True, metavar="URL", help="the backup repository")
    archive.add_argument("--archive-repo", required=True, metavar="URL", help="the archive repository "
                         "(created when missing)")
    archive.add_argument("--restore-point", required=True, action="extend", nargs="+", metavar="ID")
    archive.add_argument("--storage-class", choices=("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD_IA",
                                                      "STANDARD"),
                         help="S3 storage class of the archived packs (default: the URL's data-storage-class, "
                              "else STANDARD); index, manifests and keys always stay STANDARD")
    archive.add_argument("--archive-kms-key-id", metavar="ID", help="KMS key for a new archive repository's key")
    archive.add_argument("--json", action="store_true")
    archive.set_defaults(func=cmd_archive)
    return parser


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    """The one-line reason printed for a failure."""
    from .errors import RdsBackupError

    if isinstance(exc, CliError | RdsBackupError):
        return one_line(str(exc)) or type(exc).__name__
    # Unexpected: still one line, with the class name to tell what kind of failure it was.
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except RetrievalPending as exc:
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_RETRIEVAL_PENDING
    except Exception as exc:  # every failure becomes one line and exit 1
        print(f"{PROG}: error: {describe(exc)}", file=sys.stderr)
        if os.environ.get("RDSBACKUP_DEBUG"):
            import traceback

            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
