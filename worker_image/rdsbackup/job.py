"""`rdsbackup job`: one image-level backup as the state machine's worker runs it.

The job spec is JSON in `$RDSBACKUP_JOB` (docs/state-machine-contract.md, "The worker job"). The worker
reads the database credentials from Secrets Manager (`secret_arn`), opens the repository or creates it
(KMS-wrapped key; a concurrent creation by another worker is tolerated), backs up (PostgreSQL, or SQL
Server through RDS native backup) and writes the result document to `result_url`. It only appends: the
retention (`forget`, `prune`) runs in the backup account's session (`rdsbackup maintain`), so production
workers need no right to delete; the spec's `retention` is not applied here.

    {"status": "ok" | "failed", "restore_point_id", "bytes", "new_bytes", "duration_seconds", "error",
     "error_type", "warnings", "session_id", "source_id", "engine", "databases", "started", "ended"}

Exit code 0 only when the restore point exists and the result document was written.

The database connection is TLS with the server certificate verified (`verify-full`) against the CA
bundle at `$RDSBACKUP_CA_BUNDLE` (the image ships the RDS global bundle). Only for a local run without
TLS may `$RDSBACKUP_SSL_MODE` (disable/prefer/require) lower that, and the result then says so in
`warnings`. The password is never logged, never put in the result, never passed on a command line.

Log lines go to stderr as JSON, one per event, with the session id and source id.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .errors import RepositoryExists, RepositoryNotFound
from .worker_job import (  # noqa: F401  (JsonLog, describe, utcnow, write_result: used by importers of this module)
    JOB_ENV,
    JobError,
    JobRun,
    JobSpecError,
    JsonLog,
    ResultNotWritten,
    describe,
    load_spec,
    one_line,
    result_url_of,
    spec_text,
    stop_on_sigterm,
    utcnow,
    write_result,
)

CA_BUNDLE_ENV = "RDSBACKUP_CA_BUNDLE"
SSL_MODE_ENV = "RDSBACKUP_SSL_MODE"
INIT_SETTLE_ENV = "RDSBACKUP_INIT_SETTLE_SECONDS"
ENGINES = ("postgres", "sqlserver")
DEFAULT_PORTS = {"postgres": 5432, "sqlserver": 1433}


class CredentialsError(JobError):
    """The database credentials could not be read from Secrets Manager."""


class TlsNotConfigured(JobError):
    """No CA bundle to verify the database's certificate with."""


class JobStopped(JobError):
    """The worker was told to stop (SIGTERM: ECS stop_task, a timeout) before the backup finished."""


# --- the spec -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    session_id: str
    resource_arn: str
    source_id: str
    engine: str
    host: str | None
    port: int
    secret_arn: str
    databases: list[str] | None
    repository: str
    repository_kms_key_arn: str | None
    keep_last: int | None
    keep_days: int | None
    result_url: str
    sqlserver: dict | None
    # the database resource id (DbiResourceId/DbClusterResourceId): a recreated DB starts a new chain
    source_resource_id: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> JobSpec:
        return cls.from_dict(load_spec(text))

    @classmethod
    def from_dict(cls, doc: dict) -> JobSpec:
        def text(name: str, *, required: bool = True) -> str | None:
            return spec_text(doc, name, required=required)

        engine = text("engine")
        if engine not in ENGINES:
            raise JobSpecError(f"job spec: 'engine' must be one of {', '.join(ENGINES)}, not {engine!r}")
        port = doc.get("port") or DEFAULT_PORTS[engine]
        if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit():
            raise JobSpecError(f"job spec: 'port' must be a number, not {port!r}")
        databases = doc.get("databases")
        if databases is not None and (not isinstance(databases, list)
                                      or not all(isinstance(d, str) and d for d in databases)):
            raise JobSpecError("job spec: 'databases' must be null or a list of names")
        retention = doc.get("retention") or {}
        if not isinstance(retention, dict):
            raise JobSpecError("job spec: 'retention' must be an object")
        keep = {}
        for name in ("keep_last", "keep_days"):
            value = retention.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise JobSpecError(f"job spec: 'retention.{name}' must be null or a number >= 1")
            keep[name] = value
        result_url = text("result_url")
        if urlparse(result_url).scheme != "s3" or not urlparse(result_url).netloc:
            raise JobSpecError(f"job spec: 'result_url' must be s3://bucket/key, not {result_url!r}")
        sqlserver = doc.get("sqlserver")
        if engine == "sqlserver" and (not isinstance(sqlserver, dict) or not sqlserver.get("temp_bucket")):
            raise JobSpecError("job spec: engine sqlserver needs 'sqlserver': {'temp_bucket', 'temp_prefix'}")
        return cls(
            session_id=text("session_id", required=False) or "",
            resource_arn=text("resource_arn", required=False) or "",
            source_id=text("source_id"), source_resource_id=text("source_resource_id", required=False) or None,
            engine=engine, host=text("host", required=False), port=int(port),
            secret_arn=text("secret_arn"), databases=databases or None, repository=text("repository"),
            repository_kms_key_arn=text("repository_kms_key_arn", required=False),
            keep_last=keep["keep_last"], keep_days=keep["keep_days"], result_url=result_url,
            sqlserver=sqlserver if engine == "sqlserver" else None,
        )


# --- AWS ------------------------------------------------------------------------------------------------


def _region_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if arn.startswith("arn:") and len(parts) > 3 and parts[3] else None


def read_credentials(secret_arn: str) -> dict:
    """`username` and `password` (and maybe `host`, `port`) from a Secrets Manager secret, as RDS-managed
    secrets hold them."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("secretsmanager", region_name=_region_of(secret_arn))
        response = client.get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise CredentialsError(f"cannot read the database secret {secret_arn}: {code}") from None
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot read the database secret {secret_arn}: {one_line(exc)}") from None
    text = response.get("SecretString")
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CredentialsError(f"secret {secret_arn} is not a JSON object with 'username' and 'password'")
    if not data.get("password") or not (data.get("username") or data.get("user")):
        raise CredentialsError(f"secret {secret_arn} has no 'username' and 'password'")
    return data


# --- the repository -------------------------------------------------------------------------------------


def open_or_init_repository(url: str, kms_key_arn: str | None, log) -> Any:
    """Open the repository; create it first if there is none. Another worker may create it at the same
    time: whoever loses sees RepositoryExists, and everyone reopens after a short pause so that all use
    the config (and key) that was written last."""
    from .repository import Repository

    try:
        return Repository.open(url)
    except RepositoryNotFound:
        pass
    password = None
    if not kms_key_arn:
        password = os.environ.get("RDSBACKUP_PASSWORD")
        if not password:
            raise JobSpecError(f"repository {url} does not exist and the job names no repository_kms_key_arn "
                               f"(nor is RDSBACKUP_PASSWORD set) to create it with")
    try:
        Repository.init(url, kms_key_id=kms_key_arn, password=password)
        log("repository initialised", repository=url, kms_key=kms_key_arn)
    except RepositoryExists:
        log("repository created meanwhile by another worker", repository=url)
    time.sleep(float(os.environ.get(INIT_SETTLE_ENV, "2")))
    return Repository.open(url)


def _config_id(repo) -> str | None:
    try:
        return json.loads(repo.backend.get("config")).get("id")
    except Exception:
        return None


# --- the backup -----------------------------------------------------------------------------------------


def tls_settings(warnings: list[str]) -> tuple[str, str | None]:
    """(sslmode, CA bundle) for the job: verify-full against $RDSBACKUP_CA_BUNDLE."""
    override = os.environ.get(SSL_MODE_ENV)
    bundle = os.environ.get(CA_BUNDLE_ENV) or None
    if override and override not in ("verify-full", "verify-ca"):
        if override not in ("disable", "allow", "prefer", "require"):
            raise TlsNotConfigured(f"{SSL_MODE_ENV}={override!r} is not an sslmode")
        warnings.append(f"TLS certificate verification is off ({SSL_MODE_ENV}={override})")
        return override, None
    if not bundle:
        raise TlsNotConfigured(f"{CA_BUNDLE_ENV} is not set: the worker connects to the database only over "
                               f"TLS verified against a CA bundle (the image sets it to the RDS global bundle)")
    if not os.path.isfile(bundle):
        raise TlsNotConfigured(f"{CA_BUNDLE_ENV}={bundle} does not exist")
    return override or "verify-full", bundle


def run_backup(repo, spec: JobSpec, creds: dict, warnings: list[str], *, sqlserver_connect=None) -> dict:
    host = spec.host or creds.get("host")
    if not host:
        raise JobSpecError("job spec: 'host' is required (and the secret names none)")
    user = creds.get("username") or creds.get("user")
    ssl_mode, bundle = tls_settings(warnings)
    if spec.engine == "postgres":
        from .postgres import ConnectionInfo, backup_postgres

        info = ConnectionInfo(host=host, port=spec.port, user=user, password=creds["password"],
                              ssl_mode=ssl_mode, ca_bundle=bundle or "")
        return backup_postgres(repo, info, databases=spec.databases, source_id=spec.source_id)
    from .sqlserver import PollPolicy, SqlServerInfo, backup_sqlserver
    from .sqlserver.connection import factory_from_env

    info = SqlServerInfo(host=host, port=spec.port, user=user, password=creds["password"], ca_bundle=bundle or "")
    sq = spec.sqlserver or {}
    return backup_sqlserver(
        repo, info, temp_bucket=sq["temp_bucket"], temp_prefix=sq.get("temp_prefix") or f"{spec.session_id}/",
        databases=spec.databases, source_id=spec.source_id, kms_key_arn=sq.get("kms_key_arn"),
        option_group=sq.get("option_group"), connect=sqlserver_connect or factory_from_env(),
        poll=PollPolicy.from_env(sq.get("task_timeout_seconds")))


def run_job(spec_text: str | None, *, log: JsonLog | None = None, sqlserver_connect=None) -> tuple[dict, int]:
    """Run the job; returns (result document, exit code). The result is written to `result_url` when
    the spec names one."""
    run = JobRun({"status": "failed", "restore_point_id": None, "bytes": None, "new_bytes": None,
                  "duration_seconds": None, "error": None, "error_type": None, "warnings": []}, log)
    log, result, warnings = run.log, run.result, run.warnings
    spec: JobSpec | None = None
    with run.failure_recorded("job failed", restore_point_id=None):
        spec = JobSpec.parse(spec_text)
        log.context = {"session_id": spec.session_id, "source_id": spec.source_id, "engine": spec.engine}
        result.update(session_id=spec.session_id, resource_arn=spec.resource_arn, source_id=spec.source_id,
                      engine=spec.engine)
        log("job started", host=spec.host, port=spec.port, repository=spec.repository)
        creds = read_credentials(spec.secret_arn)
        run.secret = creds["password"]
        repo = open_or_init_repository(spec.repository, spec.repository_kms_key_arn, log)
        if spec.source_resource_id:
            repo.manifest_defaults["source_resource_id"] = spec.source_resource_id
        # A wait for a repository lock (a prune running, or a crashed one's lock) is logged as it starts.
        repo.on_lock_wait = lambda event: log("waiting for a repository lock", level="WARNING", detail=event["message"],
                                              **{k: v for k, v in event.items() if k not in ("event", "message")})
        repo_id = repo.id
        backup = run_backup(repo, spec, creds, warnings, sqlserver_connect=sqlserver_connect)
        rp_id = backup["restore_point_id"]
        if _config_id(repo) not in (repo_id, None):
            # A racing init replaced the config after we opened it: our restore point is sealed with a key
            # the repository no longer has. Take it back rather than leave an unreadable manifest.
            repo.backend.delete(f"manifests/{rp_id}")
            raise JobError(f"repository {spec.repository} was re-initialised by another worker during the backup; "
                           f"the backup was discarded, run it again")
        warnings.extend(backup.get("warnings") or [])
        result.update(status="ok", restore_point_id=rp_id, bytes=backup.get("bytes"),
                      new_bytes=backup.get("new_bytes"),
                      databases=[d["name"] for d in backup.get("databases", [])])
        log("backup done", restore_point_id=rp_id, bytes=backup.get("bytes"), new_bytes=backup.get("new_bytes"))
    url = spec.result_url if spec else result_url_of(spec_text)
    return run.finish(url, "job finished", status=result["status"], restore_point_id=result["restore_point_id"],
                      warnings=warnings, result_url=url)


def _kind_of(text: str | None) -> str | None:
    """The job's kind: "restore_test", "restore", or None for a backup (the spec is checked by whoever runs it)."""
    try:
        doc = json.loads(text or "")
    except ValueError:
        return None
    return doc.get("kind") if isinstance(doc, dict) else None


def main(environ: dict | None = None) -> int:
    """`rdsbackup job`: exit 0 only when the restore point exists and the result was written."""
    env = os.environ if environ is None else environ
    stop_on_sigterm(JobStopped, "the backup")
    kind = _kind_of(env.get(JOB_ENV))
    if kind == "restore_test":
        from .restore_test_job import run_restore_test

        result, code = run_restore_test(json.loads(env[JOB_ENV]))
    elif kind == "restore":
        from .restore_job import run_restore

        result, code = run_restore(json.loads(env[JOB_ENV]))
    else:
        result, code = run_job(env.get(JOB_ENV))
    if code != 0 and result.get("error"):
        print(f"rdsbackup: error: {result['error']}", file=sys.stderr)
    return code
