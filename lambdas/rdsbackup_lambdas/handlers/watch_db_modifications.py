"""Lambda ``watch_db_modifications``: EventBridge target of the CloudTrail ``ModifyDBInstance`` /
``ModifyDBCluster`` / ``AddTagsToResource`` events of the launch and restore roles (forwarded from each
production account).

Input:  the EventBridge event (``detail`` is the CloudTrail record).
Output: ``{"alert": bool, "changed": [parameter names, or tag keys]}``; one SNS message when ``alert``.
Env:    ``WATCHED_ROLES`` (JSON: role ARN -> "launch" | "restore"), ``TOPIC_ARN``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rdsbackup_lambdas.db_modification_watch import check_event
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return check_event(event, json.loads(os.environ["WATCHED_ROLES"]), os.environ["TOPIC_ARN"])
