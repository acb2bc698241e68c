"""The Lambda asset: deploy bundles Lambda-platform wheels with the local pip (no Docker); synth in
tests stages the source folder and never bundles."""

import subprocess
from pathlib import Path

from aws_cdk import App, Stack

from infra.lambda_code import LAMBDA_SOURCE, _PipWheelBundler, lambda_code


def test_bundler_installs_lambda_platform_wheels_and_copies_the_package(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv))
    assert _PipWheelBundler(LAMBDA_SOURCE).try_bundle(str(tmp_path)) is True
    (argv,) = calls
    assert argv[1:4] == ["-m", "pip", "install"]
    assert argv[argv.index("--platform") + 1] == "manylinux2014_aarch64"
    assert "--only-binary=:all:" in argv and argv[argv.index("--target") + 1] == str(tmp_path)
    assert argv[argv.index("-r") + 1] == str(LAMBDA_SOURCE / "requirements.txt")
    assert (tmp_path / "rdsbackup_lambdas" / "handlers" / "create_snapshot.py").exists()
    assert not list(Path(tmp_path).rglob("__pycache__"))


def _synth_with_function(outdir: Path, context: dict) -> None:
    from aws_cdk import aws_lambda as lambda_

    app = App(context=context, outdir=str(outdir))
    stack = Stack(app, "S")
    lambda_.Function(stack, "F", runtime=lambda_.Runtime.PYTHON_3_13, handler="x.handler", code=lambda_code(stack))
    app.synth()


def test_synth_bundles_by_default_and_not_when_told(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv))
    _synth_with_function(tmp_path / "skip", {"rdsbackup:bundle": "false"})
    assert calls == []
    _synth_with_function(tmp_path / "bundle", {})
    assert len(calls) == 1 and "--platform" in calls[0]


def test_files_generated_at_synth_are_in_the_package(tmp_path):
    from aws_cdk import aws_lambda as lambda_

    app = App(context={"rdsbackup:bundle": "false"}, outdir=str(tmp_path))
    stack = Stack(app, "S")
    code = lambda_code(stack, files={"rdsbackup_policies.json": '{"demo": {}}'})
    lambda_.Function(stack, "F", runtime=lambda_.Runtime.PYTHON_3_13, handler="x.handler", code=code)
    app.synth()
    (package,) = [p for p in tmp_path.glob("asset.*") if p.is_dir()]
    assert (package / "rdsbackup_policies.json").read_text() == '{"demo": {}}'
    assert (package / "rdsbackup_lambdas" / "handlers" / "resolve_policy.py").exists()
