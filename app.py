#!/usr/bin/env python3
"""The CDK app: load and validate the backup config, then build the stacks."""

import os
import sys
from pathlib import Path

from aws_cdk import App

from infra.app_builder import build_app
from infra.config import ConfigError, load_config

app = App()
try:
    config = load_config(
        {key: app.node.try_get_context(key) for key in ("rdsbackup", "rdsbackup:config_file")},
        base_dir=Path(__file__).parent,
        default_account=os.environ.get("CDK_DEFAULT_ACCOUNT", ""),
        default_region=os.environ.get("CDK_DEFAULT_REGION", ""),
    )
except ConfigError as error:
    sys.exit(f"rds-backup config error: {error}")
build_app(app, config)
app.synth()
