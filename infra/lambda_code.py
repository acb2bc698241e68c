"""The Lambda asset: the `lambdas/` package plus its dependencies as Lambda-platform wheels.

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
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

LAMBDA_SOURCE = Path(__file__).resolve().parent.parent / "lambdas"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
_PIP_PLATFORM = "manylinux2014_aarch64"
_PYTHON_VERSION = "3.14"
_EXCLUDE = ["**/__pycache__", "**/*.pyc", "*.egg-info"]


@jsii.implements(ILocalBundling)
class _PipWheelBundler:
    """Installs Lambda-platform wheels into the asset with the local pip (no Docker)."""

    def try_bundle(self, output_dir: str, *, image=None, **_: object) -> bool:
        requirements = LAMBDA_SOURCE / "requirements.txt"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
             "--platform", _PIP_PLATFORM, "--implementation", "cp", "--python-version", _PYTHON_VERSION,
             "--only-binary=:all:", "--target", output_dir, "-r", str(requirements)],
            check=True,
        )
        shutil.copytree(LAMBDA_SOURCE / "rdsbackup_lambdas", Path(output_dir) / "rdsbackup_lambdas",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        return True


def lambda_code(scope: IConstruct) -> lambda_.Code:
    """One asset shared by every function (CDK uploads it once)."""
    if str(scope.node.try_get_context("rdsbackup:bundle")).lower() == "false":
        return lambda_.Code.from_asset(str(LAMBDA_SOURCE), exclude=_EXCLUDE)
    return lambda_.Code.from_asset(
        str(LAMBDA_SOURCE),
        exclude=_EXCLUDE,
        asset_hash_type=AssetHashType.SOURCE,
        bundling=BundlingOptions(
            # Only used if local bundling is impossible; `_PipWheelBundler` always succeeds or raises.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_PipWheelBundler(),
        ),
    )
