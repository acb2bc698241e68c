"""A fake ``LambdaContext`` for calling handlers in-process (unit tests and the end-to-end harness)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from the Lambda context, with harmless defaults."""

    function_name: str = "rdsbackup-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:rdsbackup-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/rdsbackup-test"
    log_stream_name: str = "test"
    remaining_time_in_millis: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_time_in_millis


def lambda_context(function_name: str = "rdsbackup-test", **overrides: object) -> FakeLambdaContext:
    """A fresh context (new request id) for one invocation."""
    return FakeLambdaContext(function_name=function_name, **overrides)  # type: ignore[arg-type]
