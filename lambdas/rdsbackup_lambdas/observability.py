"""Logger, Tracer and Metrics, created once, and the decorator stack every handler uses.

Every handler is wrapped by :func:`lambda_handler`, so all of them log the same way: structured JSON,
the Lambda context injected, the correlation id set to the backup session id (and the resource ARN
added when the event carries one), traced with X-Ray, and metrics flushed as EMF at the end.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from rdsbackup_lambdas.errors import RdsBackupError

SERVICE = "rdsbackup"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", SERVICE))

# Not every handler emits a metric on every call; an empty flush is normal here, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

__all__ = ["MetricUnit", "lambda_handler", "logger", "metrics", "tracer"]

Handler = Callable[[dict[str, Any], Any], Any]


def _session_id(event: Any) -> str | None:
    if not isinstance(event, dict):
        return None
    if isinstance(event.get("session_id"), str):
        return event["session_id"]
    session = event.get("session")
    if isinstance(session, dict) and isinstance(session.get("session_id"), str):
        return session["session_id"]
    return None


def _resource_arn(event: Any) -> str | None:
    if isinstance(event, dict) and isinstance(event.get("resource"), dict):
        arn = event["resource"].get("arn")
        return arn if isinstance(arn, str) else None
    return None


def correlate(session_id: str | None, **keys: Any) -> None:
    """Correlate every following log line with a session (used where the session id is computed)."""
    if session_id:
        logger.set_correlation_id(session_id)
        logger.append_keys(session_id=session_id)
    if keys:
        logger.append_keys(**keys)


def lambda_handler(fn: Handler) -> Handler:
    """The decorator stack of every handler: context + correlation in logs, tracing, metrics."""

    @functools.wraps(fn)
    def correlated(event: dict[str, Any], context: Any) -> Any:
        correlate(_session_id(event))
        arn = _resource_arn(event)
        if arn:
            logger.append_keys(resource_arn=arn)
        try:
            return fn(event, context)
        except RdsBackupError as exc:
            # Expected failures: the state machine retries or catches them by class name.
            logger.warning("handler raised %s: %s", type(exc).__name__, exc, extra={"error": type(exc).__name__})
            raise
        except Exception:
            logger.exception("unexpected error")
            raise

    traced = tracer.capture_lambda_handler(correlated)
    with_metrics = metrics.log_metrics(traced)
    return logger.inject_lambda_context(with_metrics, clear_state=True)
