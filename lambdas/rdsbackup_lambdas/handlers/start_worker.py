"""Lambda state ``start_worker``: run the worker task (or find the one a previous try started).

``ecs.run_task`` on the worker cluster: Fargate, or the EC2 capacity provider of the worker settings;
``awsvpc`` in the prepared subnets with the worker group and no public IP; ``startedBy`` derived from the
session and resource (a retry finds its task through ``list_tasks``); command ``job`` with the job spec
(no secrets) in ``RDSBACKUP_JOB``; task-level CPU/memory overrides.

Input:  ITEM with ``image_backup`` and ``image`` (from ``prepare_worker``).
Output: ``$.image`` + ``{"phase": "started", "task_arn", "started_at": epoch}`` (``result_path`` ``$.image``).
Env:    none.
Raises: ``WorkerFailed`` (ECS could not place the task: its reason), ``DBNotAvailable`` (the DB group is
not active on the DB yet; retried), ``SecurityGroupError``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.image import worker
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return worker.start_worker(Item.model_validate(event))
