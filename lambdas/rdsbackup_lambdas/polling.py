"""The growing-interval arithmetic of the Wait/Choice loops (``check_snapshot``, ``replicate_snapshot``)."""

from __future__ import annotations

import math

from rdsbackup_lambdas.errors import RdsBackupError
from rdsbackup_lambdas.models import PollState, WaitSettings


def next_poll(
    previous: PollState | None, wait: WaitSettings, *, ready: bool, timeout_error: type[RdsBackupError], what: str
) -> dict[str, int]:
    """Attempt number, seconds waited so far, and how long to wait before the next check.

    ``waited_seconds`` is the sum of the waits the state machine has done (the previous result's
    ``waited_seconds + wait_seconds``). Not ready and past ``timeout_seconds`` raises ``timeout_error``.
    The interval starts at ``initial_seconds`` and grows by ``factor`` up to ``max_seconds``; the last
    wait is trimmed so the loop ends close to the timeout.
    """
    attempt = (previous.attempt if previous else 0) + 1
    waited = (previous.waited_seconds + previous.wait_seconds) if previous else 0
    if ready:
        return {"attempt": attempt, "wait_seconds": 0, "waited_seconds": waited}
    if waited >= wait.timeout_seconds:
        raise timeout_error(
            f"{what} is still not ready after {waited} s ({attempt} checks); the timeout is "
            f"{wait.timeout_seconds} s"
        )
    if previous is None or previous.wait_seconds <= 0:
        interval = wait.initial_seconds
    else:
        interval = math.ceil(previous.wait_seconds * wait.factor)
    interval = max(1, min(interval, wait.max_seconds, wait.timeout_seconds - waited))
    return {"attempt": attempt, "wait_seconds": interval, "waited_seconds": waited}
