#!/usr/bin/env python3
"""The CDK app: `cdk synth` / `cdk deploy` from deploy/ (README, "Deploying on AWS").

Context (all optional, `-c key=value`): account, region (default: the CLI's profile, else an
environment-agnostic template), availability_zones (comma-separated; default <region>a,<region>b, so
synth needs no AWS lookup), certificate_arn, dashboard_domain, dashboard_image, cognito_domain_prefix
(each also a CloudFormation parameter when not given here), mwaa_airflow_version.
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from stockpipe_cdk.stack import StockpipeStack

app = cdk.App()
account = app.node.try_get_context("account") or os.environ.get("CDK_DEFAULT_ACCOUNT")
region = app.node.try_get_context("region") or os.environ.get("CDK_DEFAULT_REGION")
env = cdk.Environment(account=account, region=region) if account and region else None
StockpipeStack(app, "Stockpipe", env=env, description="stockpipe: market data on MSK, RDS, ElastiCache, MWAA, ECS")
app.synth()
