"""What every worker job does around its work: `rdsbackup job` (a backup, a restore, a restore test) and
`rdsbackup maintain` alike.

- the spec: JSON in `$RDSBACKUP_JOB` (`load_spec`), its string fields checked by `spec_text`;
- the result document: a `JobRun` keeps it with the start time and the log; `run.failure_recorded(...)`
  turns any error of the work into status "failed" with `error` (the database password, once known,
  replaced by ***) and `error_type`; `run.finish(url, ...)` adds the duration and end time and writes
  it to `result_url` (S3);
- the exit code: 0 only when the status is "ok" and the result was written;
- SIGTERM (ECS stop_task, a timeout) raised as an error in the main thread (`stop_on_sigterm`), so the
  work in progress unwinds (no restore point, nothing half-copied) and a failed result is still written;
- log lines: one JSON object per event on stderr (`JsonLog`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlparse

from .errors import RdsBackupError

JOB_ENV = "RDSBACKUP_JOB"


class JobError(RdsBackupError):
    """The job could not run as specified."""


class JobSpecError(JobError):
    """`$RDSBACKUP_JOB` is missing or not a valid job spec."""


class ResultNotWritten(JobError):
    """The result document could not be written to `result_url`."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException, secret: str | None = None) -> str:
    text = one_line(exc) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text


class JsonLog:
    """One JSON line per event on stderr."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.context: dict = {}

    def __call__(self, message: str, level: str = "INFO", **fields) -> None:
        record = {"time": utcnow(), "level": level, "message": message, **self.context, **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


# --- the spec -------------------------------------------------------------------------------------------


def load_spec(text: str | None, what: str = "job spec") -> dict:
    """The spec in `$RDSBACKUP_JOB` as a JSON object (JobSpecError naming what is wrong)."""
    if not text:
        raise JobSpecError(f"${JOB_ENV} is not set: it must hold the {what} (JSON)")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise JobSpecError(f"${JOB_ENV} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise JobSpecError(f"${JOB_ENV} must be a JSON object")
    return doc


def spec_text(doc: dict, name: str, what: str = "job spec", *, required: bool = True) -> str | None:
    """A string field of a spec: None when absent or empty (JobSpecError if `required`)."""
    value = doc.get(name)
    if value in (None, ""):
        if required:
            raise JobSpecError(f"{what}: '{name}' is required")
        return None
    if not isinstance(value, str):
        raise JobSpecError(f"{what}: '{name}' must be a string")
    return value


def result_url_in(doc) -> str | None:
    url = doc.get("result_url") if isinstance(doc, dict) else None
    return url if isinstance(url, str) and url.startswith("s3://") else None


def result_url_of(text: str | None) -> str | None:
    """The result URL of a spec that may be invalid otherwise (so even that failure is reported)."""
    try:
        return result_url_in(json.loads(text or ""))
    except ValueError:
        return None


# --- the result -----------------------------------------------------------------------------------------


def _s3():
    """Result documents go to the repository bucket (the backup account's)."""
    from .s3_clients import REPOSITORY_OWNER_ENV, owner_from_env, s3_client

    return s3_client(owner_from_env(REPOSITORY_OWNER_ENV))


def write_result(url: str, doc: dict) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(url)
    body = json.dumps(doc, indent=1, sort_keys=True, default=str).encode()
    try:
        _s3().put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body,
                         ContentType="application/json")
    except (BotoCoreError, ClientError) as exc:
        raise ResultNotWritten(f"cannot write the result to {url}: {one_line(exc)}") from None


def request_result(kind: str, doc: dict, outcome: str) -> dict:
    """The result document of a job run for a request (restore, restore test) before it ran: failed, its
    `outcome` field still null, the request's identifiers copied."""
    return {"kind": kind, "status": "failed", outcome: None, "error": None, "error_type": None, "warnings": [],
            "session_id": doc.get("session_id"), "resource_arn": doc.get("resource_arn"),
            "source_id": doc.get("source_id"), "restore_point_id": doc.get("restore_point_id")}


class JobRun:
    """One job run: its result document (status "failed" until the work says otherwise), when it started,
    its log, and the secret to keep out of error texts once the work has read it."""

    def __init__(self, result: dict, log: JsonLog | None = None):
        self.log = log or JsonLog()
        self.started = time.monotonic()
        self.result = result
        result.setdefault("status", "failed")
        result.setdefault("warnings", [])
        result["started"] = utcnow()
        self.secret: str | None = None

    @property
    def warnings(self) -> list[str]:
        return self.result["warnings"]

    @contextlib.contextmanager
    def failure_recorded(self, message: str, **on_failure):
        """Run the work in the block; any error ends it: the result says "failed" (plus `on_failure`) with
        the error, and `message` is logged. With $RDSBACKUP_DEBUG the traceback goes to stderr too."""
        try:
            yield self
        except Exception as exc:
            self.result.update(status="failed", **on_failure, error=describe(exc, self.secret),
                               error_type=type(exc).__name__)
            self.log(message, level="ERROR", error=self.result["error"], error_type=self.result["error_type"])
            if os.environ.get("RDSBACKUP_DEBUG"):
                import traceback

                traceback.print_exc()

    def finish(self, url: str | None, message: str, **fields) -> tuple[dict, int]:
        """Write the result to `url`, then log `message` with `fields` and the duration; returns (result,
        exit code)."""
        result = self.result
        result.update(duration_seconds=round(time.monotonic() - self.started, 3), ended=utcnow())
        if not url:
            self.log("no result_url to write the result to", level="ERROR")
            return result, 1
        try:
            write_result(url, result)
        except Exception as exc:
            point = {"restore_point_id": result["restore_point_id"]} if "restore_point_id" in result else {}
            self.log("result not written", level="ERROR", error=describe(exc), **point)
            return result, 1
        self.log(message, **fields, duration_seconds=result["duration_seconds"])
        return result, 0 if result["status"] == "ok" else 1


def run_request(doc: dict, kind: str, what: str, outcome: str, work, *, log: JsonLog | None,
                failed: str, summary) -> tuple[dict, int]:
    """A job run for a request (a restore, a restore test): `work(doc, run)` gives the result's `outcome`
    field; `failed` is logged if it raises; the result goes to the spec's `result_url`, then "`what`
    finished" is logged with `summary(outcome)`."""
    run = JobRun(request_result(kind, doc, outcome), log)
    run.log.context = {"session_id": doc.get("session_id"), "source_id": doc.get("source_id"), "kind": kind}
    with run.failure_recorded(failed):
        run.log(f"{what} started", host=doc.get("host"), restore_point_id=doc.get("restore_point_id"))
        run.result[outcome] = work(doc, run)
        run.result["status"] = "ok"
    return run.finish(result_url_in(doc), f"{what} finished", status=run.result["status"],
                      **summary(run.result[outcome]))


def stop_on_sigterm(error: type[Exception], what: str) -> None:
    """SIGTERM (what ECS sends before SIGKILL) raises `error` in the main thread, so `what` is unwound and
    a failed result is still written; a second SIGTERM ends the process at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise error(f"the worker was stopped (SIGTERM) before {what} finished")

    signal.signal(signal.SIGTERM, handler)
