"""One Lambda-backed step of a state machine: its function, its role, its log group, and its task state."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.lambda_code import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from infra.nag import acknowledge
from infra.powers import step_role_name
from infra.topology import REPOSITORY_OWNER_ENV, names_of


class LambdaStep(Construct):
    """A handler in `rdsbackup_lambdas.handlers.<handler>` with a least-privilege role of its own.

    Grant what the handler needs on `self.role`; make task states with `task(scope, ...)`. The step is
    made once; each workflow that uses it builds its states in its own scope, so several state machines
    share one function, role and log group.
    """

    def __init__(self, scope: Construct, id_: str, *, handler: str, code: lambda_.Code,
                 environment: dict[str, str] | None = None, timeout: Duration | None = None,
                 memory_size: int = 256, log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS):
        super().__init__(scope, id_)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.handler = handler
        # Named after the handler: roles in other accounts trust a step by its role's ARN (infra.powers).
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             role_name=step_role_name(handler, Stack.of(self).region, names_of(self)),
                             description=f"rds-backup {handler} Lambda")
        self.function = lambda_.Function(
            self, "Function",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=f"rdsbackup_lambdas.handlers.{handler}.handler",
            code=code,
            role=self.role,
            timeout=timeout or Duration.seconds(60),
            memory_size=memory_size,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            environment={
                "POWERTOOLS_SERVICE_NAME": "rdsbackup",
                "POWERTOOLS_METRICS_NAMESPACE": "rdsbackup",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                # the account every bucket reached with the function's own credentials must belong to
                # (ExpectedBucketOwner: rdsbackup_lambdas.aws_sessions)
                REPOSITORY_OWNER_ENV: Stack.of(self).account,
                **(environment or {}),
            },
        )
        # The function's own log group only (no AWSLambdaBasicExecutionRole with logs:* on *).
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn],
        ))
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]",
                    "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions; they "
                    "are the only wildcard CDK adds for active tracing.")

    def task(self, scope: Construct, state_id: str, *, result_path: str | None, payload: dict | None = None,
             retries: list[dict] | None = None) -> tasks.LambdaInvoke:
        """A task state in `scope` (the workflow) that invokes the handler and places its result at
        `result_path`. `state_id` is the state's name; it must be unique within the state machine.

        Lambda service errors are retried by CDK's defaults; `retries` adds our own error names as
        dicts of `sfn.RetryProps` keyword arguments.
        """
        invoke = tasks.LambdaInvoke(
            scope, state_id,
            state_name=state_id,
            lambda_function=self.function,
            payload=sfn.TaskInput.from_object(payload) if payload is not None else None,
            payload_response_only=True,
            retry_on_service_exceptions=True,
            result_path=result_path if result_path is not None else sfn.JsonPath.DISCARD,
        )
        for retry in retries or []:
            invoke.add_retry(**retry)
        return invoke
