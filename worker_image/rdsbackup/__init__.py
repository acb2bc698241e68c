"""rds-backup worker: the repository format, database backup/restore and the `rdsbackup` CLI."""
