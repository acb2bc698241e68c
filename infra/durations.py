"""How long a backup may run, derived from the policies: the state machines' timeouts.

A Standard execution lasts at most a year. A resource's execution is bounded by the waits its steps may
take (a free slot, the snapshot, the replica, the worker) and their retries; a session runs its
resources `concurrency` at a time, so it is bounded by `ceil(max_resources / concurrency)` resources
one after another. A fixed 24 h cut off 1,000 databases at concurrency 4 (~44 h with 10-minute snapshots).
"""

from __future__ import annotations

import math

from infra.config import BackupConfig, Policy, Timing

MAX_EXECUTION_SECONDS = 365 * 24 * 3600  # Step Functions: a Standard execution lasts at most one year
_MARGIN_SECONDS = 3600
# Lambda steps of one resource that retry with backoff (create, check, tag, replicate, retention, ...)
_RETRYING_STEPS = 8


def _retry_budget(timing: Timing) -> int:
    """The longest all retries of one resource's steps can wait (each retry at its cap)."""
    per_retry = max(timing.retry_interval_seconds, 300)
    attempts = max(timing.retry_max_attempts, timing.not_available_max_attempts)
    return _RETRYING_STEPS * attempts * per_retry


def resource_seconds(policy: Policy, timing: Timing) -> int:
    """The longest one resource of `policy` may take, every wait at its timeout."""
    seconds = timing.slot_wait_timeout_seconds + timing.wait_timeout_seconds  # a free slot, the snapshot
    if policy.replication is not None:
        seconds += timing.wait_timeout_seconds  # copy slot, stage, copy: one bounded wait
    if policy.image_backup is not None:
        seconds += round(policy.image_backup.worker.timeout_minutes * 60) + timing.wait_timeout_seconds
    return seconds + _retry_budget(timing) + _MARGIN_SECONDS


def resource_timeout_seconds(config: BackupConfig) -> int:
    """The resource state machine's timeout: the longest resource of any policy."""
    return min(MAX_EXECUTION_SECONDS, max(resource_seconds(p, config.timing) for p in config.policies))


def session_timeout_seconds(config: BackupConfig) -> int:
    """The session state machine's timeout: the longest session of any policy."""
    longest = max(math.ceil(p.max_resources / p.concurrency) * resource_seconds(p, config.timing)
                  for p in config.policies)
    return min(MAX_EXECUTION_SECONDS, longest + _MARGIN_SECONDS)


RESTORE_TEST_BASE_SECONDS = 24 * 3600


def restore_test_timeout_seconds(config: BackupConfig) -> int:
    """The restore-test state machine's timeout: a day for the tests themselves, plus, for a policy that
    tests archived points, one retrieval wait (``archive.retrieval_timeout_hours``) per test of a run
    (``sample``, else up to ``max_resources`` sources). A run asks for every retrieval at its start, so
    they usually complete together, but each test bounds only its own wait, which it starts when its turn
    comes: in the worst case the waits add up, and a run cut off by this timeout would report nothing."""
    retrievals = max((math.ceil(p.archive.retrieval_timeout_hours * 3600) * (p.restore_test.sample or p.max_resources)
                      for p in config.policies
                      if p.archive is not None and p.restore_test is not None
                      and "archived_restore_point" in p.restore_test_targets), default=0)
    return min(MAX_EXECUTION_SECONDS, RESTORE_TEST_BASE_SECONDS + retrievals)
