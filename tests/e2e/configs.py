"""Configs the end-to-end tests synthesize: every flow the issue names, with tiny timings."""

CONTROL_ACCOUNT = "123456789012"
TARGET_ACCOUNT = "222222222222"
REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"

FAST_TIMING = {
    "retry_interval_seconds": 1,
    "retry_max_attempts": 2,
    "retry_backoff_rate": 1.0,
    "not_available_max_attempts": 2,
    "wait_initial_seconds": 0,
    "wait_max_seconds": 1,
    "wait_factor": 2.0,
    "wait_timeout_seconds": 30,
    "lease_seconds": 600,
    "sg_delete_attempts": 3,
    "sg_delete_interval_seconds": 0.1,
}

_SCHEDULE = {"expression": "cron(0 3 * * ? *)", "timezone": "Europe/Berlin"}

E2E_CONFIG = {
    "control": {"account": CONTROL_ACCOUNT, "region": REGION},
    "timing": FAST_TIMING,
    # small shared limits, so that sessions meet them: slots are taken, waited for and given back
    "limits": {"snapshot_creations": 4, "snapshot_copies": 2},
    "repositories": {"main": {}, "cold": {"storage_class": "DEEP_ARCHIVE"}},
    "policies": [
        {
            "name": "nightly",
            "schedule": _SCHEDULE,
            "selection": {"resources": ["orders-db"], "tags": {"backup": "nightly"}},
            "snapshot_retention": 2,
            "concurrency": 3,
            "retention_min_days": 0,  # sessions here run seconds apart; retention is what is tested
        },
        {
            "name": "regional",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "regional"}},
            "snapshot_retention": 3,
            "retention_min_days": 0,
            "replication": {"region": REPLICA_REGION, "retention": 2},
        },
        {
            "name": "vault",
            "schedule": {"expression": "rate(12 hours)", "timezone": "UTC"},
            "selection": {"tags": {"backup": "vault"}},
            "snapshot_retention": 3,
            "retention_min_days": 0,
            "replication": {"account": TARGET_ACCOUNT, "retention": 2},
        },
        {
            "name": "images",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "images"}},
            "snapshot_retention": 2,
            "retention_min_days": 0,
            "concurrency": 2,
            "image_backup": {"repository": "main", "retention": {"keep_last": 3},
                             "worker": {"timeout_minutes": 1}},
            "restore_test": {},
            # archived at once (after_days 0) by the backup-account session
            "archive": {"repository": "cold", "after_days": 0, "retention_days": 30, "gfs": {"monthly": 12},
                        # a restore from the archive waits 18 s for its retrieval (tests/e2e/test_maintenance.py)
                        "retrieval_timeout_hours": 0.005},
            "maintenance": {"worker": {"timeout_minutes": 2}},
        },
        {
            # restore tests of the newest archived point (tests/e2e/test_restore_test.py), retrieved first
            "name": "archtested",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "archtested"}},
            "snapshot_retention": 2,
            "retention_min_days": 0,
            "image_backup": {"repository": "main", "retention": {"keep_last": 3},
                             "worker": {"timeout_minutes": 1}},
            "archive": {"repository": "cold", "after_days": 0, "retrieval_timeout_hours": 0.005},
            "maintenance": {"worker": {"timeout_minutes": 2}},
            "restore_test": {"targets": ["archived_restore_point"]},
        },
        {
            "name": "hasty",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "hasty"}},
            "snapshot_retention": 2,
            "retention_min_days": 0,
            "image_backup": {"repository": "main", "worker": {"timeout_minutes": 0.05}},
        },
        {
            # snapshot-only, with restore tests on a test worker of its own (results into "main")
            "name": "snaptested",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"snapshot-test": "weekly"}},
            "snapshot_retention": 2,
            "retention_min_days": 0,
            "restore_test": {"worker": {"results_repository": "main", "timeout_minutes": 1}},
        },
        {
            # a fleet: hundreds of databases in one session (tests/e2e/test_scale.py)
            "name": "fleet",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "fleet"}},
            "snapshot_retention": 2,
            "concurrency": 50,
        },
        {
            "name": "faraway",
            "schedule": _SCHEDULE,
            "selection": {"tags": {"backup": "faraway"}},
            "snapshot_retention": 3,
            "retention_min_days": 0,
            "replication": {"account": TARGET_ACCOUNT, "region": REPLICA_REGION},
        },
    ],
}
