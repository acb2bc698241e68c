"""Every handler logs structured JSON correlated by session id, emits metrics, and names its errors."""

from __future__ import annotations

import io
import json

import pytest
from rdsbackup_lambdas.errors import SourceNotFound
from rdsbackup_lambdas.handlers import create_snapshot
from rdsbackup_lambdas.observability import logger


@pytest.fixture
def log_stream(monkeypatch) -> io.StringIO:
    """What the Powertools logger writes (its handler holds the stdout of import time)."""
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    return stream


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_logs_carry_the_session_id_and_metrics_are_emitted(world, ctx, capsys, log_stream):
    item = world.item(world.instance())
    create_snapshot.handler(item, ctx)
    lines = json_lines(capsys.readouterr().out)
    logs = json_lines(log_stream.getvalue())
    assert logs and all(line["correlation_id"] == item["session_id"] for line in logs)
    assert all(line["resource_arn"] == item["resource"]["arn"] for line in logs)
    assert logs[0]["function_request_id"] == ctx.aws_request_id
    [emf] = [line for line in lines if "_aws" in line]
    assert emf["SnapshotsCreated"] == [1.0]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "rdsbackup-tests"


def test_errors_are_raised_under_their_state_machine_names(world, ctx, log_stream):
    item = world.item(world.instance())
    item["resource"] = {**item["resource"], "id": "gone"}
    with pytest.raises(SourceNotFound) as raised:
        create_snapshot.handler(item, ctx)
    assert type(raised.value).__name__ == "SourceNotFound"  # the Lambda runtime's errorType
    warning = [line for line in json_lines(log_stream.getvalue()) if line.get("level") == "WARNING"]
    assert warning and warning[0]["error"] == "SourceNotFound"
