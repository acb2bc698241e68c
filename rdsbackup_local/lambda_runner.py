"""Runs the real Lambda handlers in-process when moto's Lambda backend (without Docker) is invoked.

moto's `LambdaSimpleBackend.invoke` is the seam: we look up the function moto created from the
template, apply its environment, import its handler and call it, and report an exception the way
the Lambda runtime does (`x-amz-function-error: Unhandled` and `{"errorType", "errorMessage"}`), so the
state machine's Retry/Catch see the exception's class name as the error name.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
import threading
import traceback
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.awslambda.utils import get_backend
from moto.awslambda_simple.models import LambdaSimpleBackend

LAMBDA_SOURCE = Path(__file__).resolve().parent.parent / "lambdas"
# The handlers import their package as Lambda does, from the asset's root.
if str(LAMBDA_SOURCE) not in sys.path:
    sys.path.insert(0, str(LAMBDA_SOURCE))


@dataclass
class FakeLambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


@dataclass
class Invocation:
    function_name: str
    handler: str
    event: Any
    error: str | None


class InProcessLambdas:
    """Context manager: while active, every Lambda invoke in moto runs our handler in this process.

    Invocations are serialised: each applies its function's environment to `os.environ`, which is
    process-wide. A handler module is re-imported when another function invokes it, as a cold start
    would, so module-level configuration never leaks between functions.
    """

    def __init__(self, *, extra_env: dict[str, str] | None = None):
        self.extra_env = extra_env or {}
        self.invocations: list[Invocation] = []
        self._lock = threading.RLock()
        self._loaded_by: dict[str, str] = {}
        self._original = None
        self._code_roots: dict[str, str] = {}
        self._unpacked = tempfile.TemporaryDirectory(prefix="rdsbackup-lambda-code-")

    def __enter__(self) -> InProcessLambdas:
        self._original = LambdaSimpleBackend.invoke
        runner = self

        def invoke(backend, function_name, qualifier, body, headers, response_headers):
            return runner._invoke(backend, function_name, qualifier, body, response_headers)

        LambdaSimpleBackend.invoke = invoke
        return self

    def __exit__(self, *exc) -> None:
        LambdaSimpleBackend.invoke = self._original
        self._unpacked.cleanup()

    def _task_root(self, function: Any) -> str:
        """The function's code package, unpacked (once per code hash), as Lambda's LAMBDA_TASK_ROOT."""
        digest = function.code_sha_256 or "empty"
        if digest not in self._code_roots:
            root = Path(self._unpacked.name) / str(len(self._code_roots))
            root.mkdir()
            if function.code_bytes:
                with zipfile.ZipFile(io.BytesIO(function.code_bytes)) as package:
                    package.extractall(root)
            self._code_roots[digest] = str(root)
        return self._code_roots[digest]

    def _invoke(self, backend, function_name, qualifier, body, response_headers) -> bytes:
        function = get_backend(backend.account_id, backend.region_name).get_function(function_name, qualifier)
        config = function.get_configuration()
        handler = config["Handler"]
        environment = (config.get("Environment") or {}).get("Variables", {})
        event = json.loads(body) if body else {}
        with self._lock, _environment({**environment, "LAMBDA_TASK_ROOT": self._task_root(function),
                                       **self.extra_env}):
            error = None
            try:
                result = self._handler(handler, config["FunctionArn"])(
                    event, FakeLambdaContext(config["FunctionName"], config["FunctionArn"]))
                payload = json.dumps(result)
            except Exception as exc:  # the Lambda runtime reports any exception as the function's error
                error = type(exc).__name__
                response_headers["x-amz-function-error"] = "Unhandled"
                payload = json.dumps({
                    "errorType": error,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_exception(exc)[-3:],
                })
            self.invocations.append(Invocation(config["FunctionName"], handler, event, error))
        return payload.encode()

    def _handler(self, handler: str, function_arn: str):
        module_name, _, attribute = handler.rpartition(".")
        module = importlib.import_module(module_name)
        if self._loaded_by.get(module_name) not in (None, function_arn):
            module = importlib.reload(module)
        self._loaded_by[module_name] = function_arn
        return getattr(module, attribute)


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """Apply a function's environment for one invocation.

    Variables are set and afterwards given back their earlier values, but never deleted: other threads
    (moto's interpreter, the test) may be copying os.environ meanwhile, and a key vanishing between
    its listing and its read raises KeyError there. A variable only this function set stays behind;
    handlers read only the variables their own function defines.
    """
    saved = {name: os.environ[name] for name in variables if name in os.environ}
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.update(saved)
