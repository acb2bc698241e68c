"""Synthesize the CDK app for a given config, in process, without bundling (no network, no Docker)."""

from __future__ import annotations

import os
from pathlib import Path

from aws_cdk import App

from infra.app_builder import BackupApp, build_app
from infra.config import parse_config


def synthesize(config: dict, outdir: Path, *, account: str, region: str,
               context: dict | None = None) -> tuple[Path, BackupApp]:
    """Validate `config`, build every stack into `outdir` (a cdk.out) and return it with the app."""
    previous = {name: os.environ.get(name) for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")}
    os.environ["CDK_DEFAULT_ACCOUNT"], os.environ["CDK_DEFAULT_REGION"] = account, region
    try:
        parsed = parse_config(config, default_account=account, default_region=region)
        # No wheel bundling: the handlers run in-process (deploy bundles Lambda-platform wheels).
        app = App(context={"rdsbackup:bundle": "false", **(context or {})}, outdir=str(outdir))
        backup_app = build_app(app, parsed)
        app.synth()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return outdir, backup_app
