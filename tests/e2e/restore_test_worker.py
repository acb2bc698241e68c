"""A test's stand-in faults around the real restore-test worker (run as `python -m tests.e2e.restore_test_worker
MODE ARG job`, by `LocalWorkers` instead of `rdsbackup job`):

- ``alter DSN``: after the worker restores the restore point, a row of ``app.orders`` in the restored
  database is changed through DSN (a superuser), as if the restored data differed from the backup;
- ``protect ARN``: before the worker runs, the throwaway instance ARN gets deletion protection, so the
  workflow cannot delete it;
- ``hide DSN``: while the worker runs, database ``shop`` is renamed through DSN (a superuser), as if the
  restored snapshot lacked it.

Then the real `rdsbackup job` runs.
"""

from __future__ import annotations

import sys

import boto3
import psycopg
import rdsbackup.postgres as postgres_package
from rdsbackup.cli import main


def _alter_after_restore(dsn: str) -> None:
    restore = postgres_package.restore_postgres

    def restore_then_alter(*args, **kwargs):
        result = restore(*args, **kwargs)
        if kwargs["target_database"] != "rdsbackup_test_shop":  # the backup holds the server's other databases too
            return result
        with psycopg.connect(dsn, dbname=kwargs["target_database"], autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # no audit trigger row
            conn.execute("UPDATE app.orders SET note = 'altered after the backup' WHERE id = 11")
        return result

    postgres_package.restore_postgres = restore_then_alter


if __name__ == "__main__":
    mode, arg, *command = sys.argv[1:]
    if mode == "alter":
        _alter_after_restore(arg)
    elif mode == "hide":
        with psycopg.connect(arg, autocommit=True) as conn:
            conn.execute("ALTER DATABASE shop RENAME TO shop_hidden")
        try:
            code = main(command)
        finally:
            with psycopg.connect(arg, autocommit=True) as conn:
                conn.execute("ALTER DATABASE shop_hidden RENAME TO shop")
        sys.exit(code)
    elif mode == "protect":
        identifier = arg.rsplit(":", 1)[-1]
        boto3.client("rds", region_name=arg.split(":")[3]).modify_db_instance(
            DBInstanceIdentifier=identifier, DeletionProtection=True, ApplyImmediately=True)
    sys.exit(main(command))
