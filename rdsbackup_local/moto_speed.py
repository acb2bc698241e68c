"""Harness-only costs of moto, removed where they change nothing our code or AWS would see.

Used by the scale benchmark (bench/scale.py) and the large e2e sessions: at a thousand resources the
harness spent its time on moto's own bookkeeping rather than on the state machines and handlers.

- ``reused_interpreter_clients``: moto 5.2.5's state-machine interpreter builds a new boto3 client
  (``boto_client_for``) for every Lambda invoke, every ``startExecution`` and every poll of a
  ``.sync:2`` child; building a client parses the service model and copies the event hooks, which cost
  more than the call. AWS's service integrations have no client to build. The patch keeps one client per
  (region, service, endpoint): the calls, their parameters and answers are unchanged.
- ``parsed_definitions_reused``: moto parses a state machine's definition with its ANTLR parser (pure
  Python) at the start of every execution; with one execution per resource that was a fifth of the
  harness's time. The patch keeps the parse tree per definition text and builds each execution's
  evaluation components from it afresh, as before (no state is shared between executions).
- ``peeking_sync_polls``: a ``.sync`` / ``.sync:2`` task checks its child every 0.5 s with a
  ``DescribeExecution`` call through botocore, which moto answers by scanning every execution of the
  state machine; with 400 children in flight (10 replicating sessions at concurrency 40) those polls
  took most of the harness's time. The patch reads the child's status from moto's execution object
  while it runs and makes moto's own call once it has ended: same interval, same answer.
- ``MOTO_EC2_LOAD_DEFAULT_AMIS=false`` (:data:`ENVIRONMENT`): every new EC2 backend (one per
  account-region that an RDS call touches) loads a few thousand public AMIs with their snapshots and
  volumes; nothing here launches an instance.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
    StateTaskServiceSfn,
)
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.asl.utils import boto_client as _boto_client

# set before moto creates its first EC2 backend (bench/scale.py sets it at import)
ENVIRONMENT = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}

_PARSER = "moto.stepfunctions.parser.asl.component.state.exec."
# every interpreter module that imported boto_client_for by name
_USERS = [_PARSER + name for name in (
    "state_task.lambda_eval_utils",
    "state_task.service.state_task_service_sfn",
    "state_task.service.state_task_service_aws_sdk",
    "state_task.service.state_task_service_dynamodb",
    "state_task.service.state_task_service_sns",
    "state_task.service.state_task_service_ecs",
    "state_task.service.state_task_service_events",
    "state_task.service.state_task_service_sqs",
    "state_map.item_reader.eval.resource_eval_s3",
    "state_map.result_writer.resource_eval.resource_eval_s3",
)]
_original = _boto_client.boto_client_for


@contextmanager
def reused_interpreter_clients() -> Iterator[None]:
    """Within the block moto's interpreter reuses its boto3 clients (one per region and service)."""
    clients: dict[tuple, Any] = {}
    lock = threading.Lock()

    def reused(region: str, service: str, state_credentials: Any = None) -> Any:
        # moto's client ignores the state's credentials; its endpoint depends on whether moto intercepts
        # in process (decorator) or serves (server mode). boto3 clients are safe to share across threads.
        key = (region, service, _boto_client.botocore_stubber.enabled)
        with lock:
            if key not in clients:
                clients[key] = _original(region, service, state_credentials)
            return clients[key]

    modules = [importlib.import_module(name) for name in _USERS]
    for module in modules:
        module.boto_client_for = reused
    try:
        yield
    finally:
        for module in modules:
            module.boto_client_for = _original


_original_parse = AmazonStateLanguageParser.parse


@contextmanager
def parsed_definitions_reused() -> Iterator[None]:
    """Within the block each definition is parsed once; every execution still gets its own components."""
    trees: dict[str, Any] = {}
    lock = threading.Lock()

    def parse(definition: str) -> tuple[Any, Any]:
        with lock:
            tree = trees.get(definition)
        if tree is None:
            program, tree = _original_parse(definition)  # raises on a syntax error, as before
            with lock:
                trees[definition] = tree
            return program, tree
        return Preprocessor().visit(tree), tree

    AmazonStateLanguageParser.parse = staticmethod(parse)
    try:
        yield
    finally:
        AmazonStateLanguageParser.parse = staticmethod(_original_parse)


_original_sync_resolvers = {name: getattr(StateTaskServiceSfn, name)
                            for name in ("_build_sync_resolver", "_build_sync2_resolver")}


def _execution(arn: str) -> Any:
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    _, _, _, region, account, *_ = arn.split(":")
    return stepfunctions_parser_backends[account][region].describe_execution(arn)


def _peeking(original: Any) -> Any:
    def build(self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: dict,
              state_credentials: Any) -> Any:
        submitted = env.stack[-1] if env.stack and isinstance(env.stack[-1], dict) else {}
        arn = submitted.get("ExecutionArn")  # what the original resolver pops and polls
        resolver = original(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        child: list[Any] = []

        def resolve() -> Any:
            if arn and not child:
                try:
                    child.append(_execution(arn))
                except Exception:  # not found: let moto's own call answer (and fail) as before
                    return resolver()
            if child and child[0].exec_status in (None, ExecutionStatus.RUNNING):
                return None
            return resolver()

        return resolve

    return build


@contextmanager
def peeking_sync_polls() -> Iterator[None]:
    """Within the block a ``.sync`` task reads its running child's status instead of calling moto."""
    for name, original in _original_sync_resolvers.items():
        setattr(StateTaskServiceSfn, name, _peeking(original))
    try:
        yield
    finally:
        for name, original in _original_sync_resolvers.items():
            setattr(StateTaskServiceSfn, name, original)


@contextmanager
def fast_harness() -> Iterator[None]:
    """Every harness-only saving of this module (set :data:`ENVIRONMENT` before moto starts, too)."""
    with reused_interpreter_clients(), parsed_definitions_reused(), peeking_sync_polls():
        yield
