"""Runs the worker of every ECS task that moto "starts" as a real local `rdsbackup` process.

moto's ECS records a task and walks it to STOPPED on its own, with no process behind it. Here the
task's container command and environment (the job spec in `RDSBACKUP_JOB`) start `rdsbackup` on this
machine, reaching AWS through moto's server, and the task's status and exit code follow the process.
The one translation is the database address: RDS endpoints do not resolve here, so `host_for`
maps an endpoint to where the stand-in PostgreSQL server listens. A task of another account than the
default one runs with credentials of that account (moto maps assumed-role credentials to the role's
account), as its task role's would be on AWS: it finds its account's secrets and temporary bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moto.ecs import models as ecs_models

WORKER_COMMAND = shutil.which("rdsbackup") or "rdsbackup"


@dataclass
class WorkerRun:
    task_id: str
    job: dict
    process: subprocess.Popen | None
    log_path: Path
    stopped_reason: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class LocalWorkers:
    """Context manager patching moto's ECS backend so tasks run `rdsbackup` locally.

    `behaviour(job) -> str` picks how a task behaves: "run" (default), "fail_to_start" (never starts,
    like an image that cannot be pulled), "hang" (runs until stopped, for timeouts) or "crash" (killed
    once its job has started, like an out-of-memory kill mid-backup); a list is the command to run instead of
    `rdsbackup` (a test's wrapper around the worker).
    """

    env: dict[str, str]
    host_for: Callable[[str], str] = lambda endpoint: endpoint
    # the account whose credentials the environment already holds (moto's default)
    default_account: str = "123456789012"
    behaviour: Callable[[dict], str | list[str]] = lambda job: "run"
    runs: dict[str, WorkerRun] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._logs = Path(tempfile.mkdtemp(prefix="rdsbackup-workers-"))

    def __enter__(self) -> LocalWorkers:
        backend = ecs_models.EC2ContainerServiceBackend
        self._originals = (backend.run_task, backend.stop_task, ecs_models.Task.advance)
        runner = self
        original_run, original_stop, original_advance = self._originals

        def run_task(self_backend, *args, **kwargs):
            tasks = original_run(self_backend, *args, **kwargs)
            for task in tasks:
                runner._start(task)
            return tasks

        def stop_task(self_backend, cluster_str, task_str, reason):
            task_id = task_str.split("/")[-1]
            if task_id in runner.runs:
                runner._stop(task_id, reason)
            return original_stop(self_backend, cluster_str, task_str, reason)

        def advance(task):
            if task.id in runner.runs:
                runner._reflect(task)
            else:
                original_advance(task)

        backend.run_task, backend.stop_task, ecs_models.Task.advance = run_task, stop_task, advance
        return self

    def __exit__(self, *exc) -> None:
        backend = ecs_models.EC2ContainerServiceBackend
        backend.run_task, backend.stop_task, ecs_models.Task.advance = self._originals
        for run in self.runs.values():
            if run.process is not None and run.process.poll() is None:
                run.process.kill()
                run.process.wait()
        shutil.rmtree(self._logs, ignore_errors=True)

    # --- the processes -----------------------------------------------------------------------------
    def _start(self, task) -> None:
        container = (task.overrides.get("containerOverrides") or [{}])[0]
        environment = {item["name"]: item["value"] for item in container.get("environment", [])}
        job = json.loads(environment.get("RDSBACKUP_JOB", "{}"))
        if job.get("host"):
            job["host"] = self.host_for(job["host"])
        environment["RDSBACKUP_JOB"] = json.dumps(job)
        command = container.get("command") or []
        behaviour = self.behaviour(job)
        log_path = self._logs / f"{task.id}.log"
        process = None
        if behaviour != "fail_to_start":
            if isinstance(behaviour, list):  # a test's own worker program (it stands in for a fault)
                argv = [*behaviour, *command]
            else:
                argv = ["sleep", "3600"] if behaviour == "hang" else [WORKER_COMMAND, *command]
            with log_path.open("wb") as log:
                process = subprocess.Popen(argv, env={**os.environ, **self.env, **self._credentials(task),
                                                      **environment}, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        run = WorkerRun(task.id, job, process, log_path)
        if behaviour == "fail_to_start":
            run.stopped_reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
        if behaviour == "crash":
            threading.Thread(target=self._kill_mid_job, args=(run,), daemon=True).start()
        with self._lock:
            self.runs[task.id] = run
        task.last_status = "PENDING" if process is not None else "STOPPED"

    def _credentials(self, task) -> dict[str, str]:
        """The task's account's credentials (none to add for the default account)."""
        account = task.task_arn.split(":")[4]
        if account == self.default_account:
            return {}
        import boto3

        sts = boto3.client("sts", endpoint_url=self.env.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL"))
        credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/rdsbackup-worker-task",
                                      RoleSessionName=f"task-{task.id}"[:64])["Credentials"]
        return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": credentials["SessionToken"]}

    @staticmethod
    def _kill_mid_job(run: WorkerRun, timeout: float = 30) -> None:
        """SIGKILL the worker once it has started its job (it logs "job started"), as an out-of-memory
        kill would: mid-backup, before it could write a restore point or a result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and run.process is not None and run.process.poll() is None:
            if "job started" in run.log():
                os.killpg(run.process.pid, signal.SIGKILL)
                return
            time.sleep(0.005)

    def _stop(self, task_id: str, reason: str) -> None:
        run = self.runs[task_id]
        run.stopped_reason = reason or "Task stopped by user"
        if run.process is not None and run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGTERM)
            try:
                run.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()

    def _reflect(self, task) -> None:
        """Task and container status from the process, as the ECS agent reports them."""
        run = self.runs[task.id]
        container = task.containers[0]
        if run.process is None:
            task.last_status = container.last_status = "STOPPED"
            task.desired_status = "STOPPED"
            task.stopped_reason = run.stopped_reason
            container.exitCode = None
            return
        code = run.process.poll()
        if code is None:
            task.last_status = container.last_status = "RUNNING"
            return
        task.last_status = container.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        # A signal kill shows as 128 + signal in ECS (137 for SIGKILL).
        container.exitCode = 128 - code if code < 0 else code
        task.stopped_reason = run.stopped_reason or "Essential container in task exited"

    def wait_all(self, timeout: float = 60) -> None:
        for run in list(self.runs.values()):
            if run.process is not None:
                run.process.wait(timeout=timeout)
