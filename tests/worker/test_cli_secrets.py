"""`--secret-arn`: database credentials from Secrets Manager (moto), as the worker gets them on AWS."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from rdsbackup import cli

from tests.support.postgres_server import shared_server

pytestmark = pytest.mark.postgres


@pytest.fixture
def secrets():
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_rds_style_secret_supplies_user_host_port_and_password(secrets, tmp_path, monkeypatch, capsys):
    server = shared_server()
    server.drop_database("secret_src")
    server.create_database("secret_src")
    arn = secrets.create_secret(Name="rds!db-orders", SecretString=json.dumps({
        "username": server.superuser, "password": server.password, "host": server.host, "port": server.port,
        "engine": "postgres"}))["ARN"]
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "pw")
    url = f"file://{tmp_path / 'repo'}"
    assert cli.main(["repo", "init", "--repo", url]) == 0
    capsys.readouterr()

    assert cli.main(["backup", "postgres", "--repo", url, "--secret-arn", arn, "--database", "secret_src",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["restore_point_id"] and out["user"] == server.superuser
    assert out["endpoint"] == f"{server.host}:{server.port}"


def test_command_line_wins_over_the_secret(secrets):
    arn = secrets.create_secret(Name="db", SecretString=json.dumps(
        {"username": "from_secret", "password": "s3cret", "host": "secret-host", "port": 6543}))["ARN"]
    args = cli.build_parser().parse_args(
        ["backup", "postgres", "--repo", "file:///x", "--secret-arn", arn, "--host", "cli-host"])
    info = cli.connection_from_args(args)
    assert (info.host, info.port, info.user, info.password) == ("cli-host", 6543, "from_secret", "s3cret")
    assert "s3cret" not in repr(info)


def test_unreadable_or_passwordless_secrets_fail_in_one_line(secrets, capsys):
    no_password = secrets.create_secret(Name="nopw", SecretString=json.dumps({"username": "u"}))["ARN"]
    missing = no_password.replace("nopw", "absent")
    for arn, reason in ((no_password, "has no 'password' field"), (missing, "cannot read secret")):
        code = cli.main(["backup", "postgres", "--repo", "file:///nowhere", "--host", "h", "--user", "u",
                         "--secret-arn", arn])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and reason in err[0], err
