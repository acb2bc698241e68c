"""The Lambda asset: the `lambdas/` package, the worker's `rdsbackup` package, files generated at synth
(the policies), and the dependencies as Lambda-platform wheels.

Bundling runs pip locally with `--platform`, so deploy needs no Docker. Tests and the local run skip
bundling (context `rdsbackup:bundle` = false), which stages the source folder as it is: they run the
handlers in-process and need no wheels.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling, Stage
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

LAMBDA_SOURCE = Path(__file__).resolve().parent.parent / "lambdas"
# The worker's repository code, for the steps that read an archive repository (archive retrieval): the
# same code reads a manifest in the Lambda as in the worker. It never chunks there (no fastcdc).
WORKER_PACKAGE = Path(__file__).resolve().parent.parent / "worker_image" / "rdsbackup"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
_PIP_PLATFORM = "manylinux2014_aarch64"
_PYTHON_VERSION = "3.14"
_EXCLUDE = ["**/__pycache__", "**/*.pyc", "*.egg-info"]


@jsii.implements(ILocalBundling)
class _PipWheelBundler:
    """Installs Lambda-platform wheels into the asset with the local pip (no Docker)."""

    def __init__(self, source: Path):
        self.source = source

    def try_bundle(self, output_dir: str, *, image=None, **_: object) -> bool:
        requirements = self.source / "requirements.txt"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
             "--platform", _PIP_PLATFORM, "--implementation", "cp", "--python-version", _PYTHON_VERSION,
             "--only-binary=:all:", "--target", output_dir, "-r", str(requirements)],
            check=True,
        )
        shutil.copytree(self.source, output_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
        return True


def _staged_source(scope: IConstruct, files: dict[str, str]) -> Path:
    """`lambdas/` with `files` added, in a folder of the synth's output (the asset is made from it)."""
    stage = Path(Stage.of(scope).outdir) / "lambda-source"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(LAMBDA_SOURCE, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    shutil.copytree(WORKER_PACKAGE, stage / "rdsbackup", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, text in files.items():
        (stage / name).write_text(text)
    return stage


def lambda_code(scope: IConstruct, *, files: dict[str, str] | None = None) -> lambda_.Code:
    """One asset shared by every function (CDK uploads it once), with `files` (name -> text) at its root."""
    source = _staged_source(scope, files or {})
    if str(scope.node.try_get_context("rdsbackup:bundle")).lower() == "false":
        return lambda_.Code.from_asset(str(source), exclude=_EXCLUDE)
    return lambda_.Code.from_asset(
        str(source),
        exclude=_EXCLUDE,
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            # Only used if local bundling is impossible; `_PipWheelBundler` always succeeds or raises.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_PipWheelBundler(source),
        ),
    )
