"""`rdsbackup` with key ordering switched off, for the benchmark's "ordered / unordered" figure only.

The worker has no option to turn primary-key ordering off (it is what makes incrementals small), so
this wrapper runs the very same CLI with every table streamed as the worker streams a table without a
key (`COPY table (cols) TO STDOUT`, physical order). The worker's code is untouched: only its
`copy_out_sql` is replaced in this process. Usage: `python bench/unordered_backup.py backup postgres ...`
"""

from __future__ import annotations

import dataclasses
import sys

from rdsbackup import cli
from rdsbackup.postgres import backup

_ordered_copy_sql = backup.copy_out_sql


def _unordered_copy_sql(table):
    return _ordered_copy_sql(dataclasses.replace(table, key=[]))


if __name__ == "__main__":
    backup.copy_out_sql = _unordered_copy_sql
    sys.exit(cli.main())
