"""Shared test setup: every test gets fake AWS credentials and never reaches a real account."""

import os

import pytest

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "rdsbackup-tests",
    "POWERTOOLS_SERVICE_NAME": "rdsbackup",
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_UNSUPPORTED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch):
    for name, value in _FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


# Module-level too: some packages read the environment at import time.
for _name, _value in _FAKE_AWS_ENV.items():
    os.environ.setdefault(_name, _value)


def pytest_sessionfinish(session, exitstatus):
    """Stop the shared PostgreSQL servers while this process still can: an xdist worker that is slow
    to exit after its session is killed by the controller, before its atexit handlers run."""
    import sys

    servers = sys.modules.get("tests.support.postgres_server")
    if servers is not None:
        servers.stop_shared_servers()
