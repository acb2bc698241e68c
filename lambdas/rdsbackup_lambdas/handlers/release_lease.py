"""Lambda state ``release_lease``: the end of every resource's execution, on every path. Releases the
per-source lease if this session holds it and every slot the resource still holds (a failed snapshot or
copy), then records the resource's result for the session report.

Input:  ITEM with the results of the states before (``lease``, ``snapshot``, ``replica``, ``retention``,
``image``, ``image_cleanup``, ``error``: whatever the path set); ``"record_result": false`` (a lease that
is no backup resource, e.g. a restore test's slot) records nothing.
Output: the resource's result, as recorded: ``{"arn", "status", "snapshot_arn", "replica_arns",
"retention_deleted", "restore_point_id", "bytes", "duration_seconds", "error", "warnings",
"lease_released", "slots_released"}``. A lease held by another session is left alone.
Env:    ``TABLE_NAME``, ``RESULTS_TABLE``, ``SESSIONS_BUCKET``.
"""

from __future__ import annotations

import time
from typing import Any

from rdsbackup_lambdas import leases, session_store, slots
from rdsbackup_lambdas.config import LeaseConfig, SessionStoreConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import MetricUnit, lambda_handler, metrics
from rdsbackup_lambdas.replication import copy_destinations
from rdsbackup_lambdas.session_report import resource_summary


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    config = LeaseConfig.from_env()
    store = SessionStoreConfig.from_env()
    holder = slots.holder_name(item.session_id, item.resource.arn)
    held = [(slots.SNAPSHOT, item.resource.account, item.resource.region)]
    held += [(slots.COPY, account, region) for account, region in copy_destinations(item)]
    given_back = sum(slots.release(config.table_name, kind, account, region, holder) for kind, account, region in held)
    released = leases.release(config.table_name, item.resource.arn, item.session_id)
    # the result is recorded last: only what really happened before it is in it
    result = resource_summary(event, time.time())
    if event.get("record_result", True):
        session_store.put_result(store.results_table, item.session_id, result)
    if result["status"] == "Success" and result["duration_seconds"] is not None:
        metrics.add_metric(name="DurationSeconds", unit=MetricUnit.Seconds, value=result["duration_seconds"])
    return {**result, "lease_released": released["released"], "slots_released": given_back}
