"""A session's end as the state machines make it: each resource's result recorded (what release_lease
records), the items where resolve_policy put them, then the session report."""

from __future__ import annotations

import time
from typing import Any

from rdsbackup_lambdas import session_store
from rdsbackup_lambdas.handlers import session_report
from rdsbackup_lambdas.session_report import resource_summary


def run_session(world: Any, ctx: Any, session: dict, results: list[dict]) -> dict:
    """Record `results` (ITEMs as their executions end) for `session` and run the session report."""
    items = [{"resource": result["resource"]} for result in results]
    session = {**session, "items_key": session_store.put_items(world.bucket, session["session_id"], items)}
    for result in results:
        session_store.put_result(world.results_table, session["session_id"], resource_summary(result, time.time()))
    return session_report.handler({"session": session, "error": None}, ctx)
