"""The security basics of the CDK stack, on its CloudFormation template (aws_cdk.assertions):
data services only in subnets without a route to the internet, encryption at rest everywhere, secrets
never in plain container environment variables, and no public endpoint that skips Cognito.

Runs in the CDK venv (.local/cdk-venv, `make test` runs it through tests/deploy/test_cdk.py). With
STOCKPIPE_CDK_TEMPLATE set to a template `cdk synth` already wrote, that one is checked (one synth
per `make test`); else the stack is synthesized here.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stockpipe_cdk.stack import StockpipeStack  # noqa: E402

SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", re.I)


@pytest.fixture(scope="module")
def template() -> Template:
    synthesized = os.environ.get("STOCKPIPE_CDK_TEMPLATE")
    if synthesized:
        return Template.from_json(json.loads(Path(synthesized).read_text()))
    app = cdk.App(context={"account": "123456789012", "region": "us-east-1"})
    stack = StockpipeStack(app, "Stockpipe", env=cdk.Environment(account="123456789012", region="us-east-1"))
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template.to_json()["Resources"]


def ids(value) -> set[str]:
    """Logical ids a property refers to (Ref / Fn::GetAtt), at any depth."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value:
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for v in value.values():
            found |= ids(v)
    elif isinstance(value, list):
        for v in value:
            found |= ids(v)
    return found


def of_type(resources: dict, kind: str) -> dict:
    return {k: r for k, r in resources.items() if r["Type"] == kind}


def public_subnets(resources: dict) -> set[str]:
    """Subnets whose route table has a route to an internet gateway, or that hand out public IPs."""
    igws = set(of_type(resources, "AWS::EC2::InternetGateway"))
    public_tables = {
        r["Properties"]["RouteTableId"]["Ref"]
        for r in of_type(resources, "AWS::EC2::Route").values()
        if ids(r["Properties"].get("GatewayId")) & igws
    }
    return {
        a["Properties"]["SubnetId"]["Ref"]
        for a in of_type(resources, "AWS::EC2::SubnetRouteTableAssociation").values()
        if a["Properties"]["RouteTableId"]["Ref"] in public_tables
    } | {k for k, s in of_type(resources, "AWS::EC2::Subnet").items() if s["Properties"].get("MapPublicIpOnLaunch")}


def test_data_services_have_no_public_subnet(resources):
    public = public_subnets(resources)
    assert public, "the ALB's public subnets should be recognised (else this test proves nothing)"
    data_subnets = {
        "RDS": [r["Properties"]["SubnetIds"] for r in of_type(resources, "AWS::RDS::DBSubnetGroup").values()],
        "ElastiCache": [
            r["Properties"]["SubnetIds"] for r in of_type(resources, "AWS::ElastiCache::SubnetGroup").values()
        ],
        "MSK": [
            r["Properties"]["BrokerNodeGroupInfo"]["ClientSubnets"]
            for r in of_type(resources, "AWS::MSK::Cluster").values()
        ],
        "MWAA": [
            r["Properties"]["NetworkConfiguration"]["SubnetIds"]
            for r in of_type(resources, "AWS::MWAA::Environment").values()
        ],
        "ECS": [
            r["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
            for r in of_type(resources, "AWS::ECS::Service").values()
        ],
    }
    for service, groups in data_subnets.items():
        assert groups, f"no {service} resource"
        for subnets in groups:
            assert len(ids(subnets)) >= 2, f"{service}: two AZs"
            assert not ids(subnets) & public, f"{service} is placed in a public subnet"
    for db in of_type(resources, "AWS::RDS::DBInstance").values():
        assert db["Properties"]["PubliclyAccessible"] is False
    for cluster in of_type(resources, "AWS::MSK::Cluster").values():
        connectivity = cluster["Properties"]["BrokerNodeGroupInfo"].get("ConnectivityInfo", {})
        assert connectivity.get("PublicAccess", {}).get("Type", "DISABLED") == "DISABLED"
    for env in of_type(resources, "AWS::MWAA::Environment").values():
        assert env["Properties"]["WebserverAccessMode"] == "PRIVATE_ONLY"
    for service in of_type(resources, "AWS::ECS::Service").values():
        assert service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def test_encryption_at_rest_and_in_transit(template, resources):
    template.has_resource_properties("AWS::RDS::DBInstance", {"StorageEncrypted": True, "KmsKeyId": Match.any_value()})
    template.has_resource_properties("AWS::RDS::DBParameterGroup", {"Parameters": {"rds.force_ssl": "1"}})
    template.has_resource_properties(
        "AWS::MSK::Cluster",
        {
            "EncryptionInfo": {
                "EncryptionAtRest": {"DataVolumeKMSKeyId": Match.any_value()},
                "EncryptionInTransit": {"ClientBroker": "TLS", "InCluster": True},
            },
            "ClientAuthentication": {"Sasl": {"Scram": {"Enabled": True}}, "Unauthenticated": {"Enabled": False}},
        },
    )
    template.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {"AtRestEncryptionEnabled": True, "TransitEncryptionEnabled": True, "AuthToken": Match.any_value()},
    )
    buckets = of_type(resources, "AWS::S3::Bucket")
    assert len(buckets) >= 2  # checkpoints, MWAA
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
    for name, secret in of_type(resources, "AWS::SecretsManager::Secret").items():
        assert "KmsKeyId" in secret["Properties"], f"{name}: encrypted with the stack's key"
        assert "SecretString" not in secret["Properties"], f"{name}: a value in the template"


def test_secrets_never_in_plain_environment_variables(resources):
    containers = [
        c
        for task in of_type(resources, "AWS::ECS::TaskDefinition").values()
        for c in task["Properties"]["ContainerDefinitions"]
    ]
    assert containers
    for container in containers:
        for variable in container.get("Environment", []):
            assert not SECRETISH.search(variable["Name"]), f"{variable['Name']} is a plain environment variable"
            assert "secretsmanager" not in json.dumps(variable["Value"]), variable["Name"]
        names = {s["Name"] for s in container.get("Secrets", [])}
        assert {"STOCKPIPE_PG_READER_PASSWORD", "STOCKPIPE_KAFKA_SASL_PASSWORD"} <= names
        assert all(SECRETISH.search(n) for n in names)
    # the Redis auth token reaches ElastiCache as a dynamic reference, never as a literal
    for group in of_type(resources, "AWS::ElastiCache::ReplicationGroup").values():
        assert "{{resolve:secretsmanager:" in json.dumps(group["Properties"]["AuthToken"])
    # nothing secret-looking is a plain parameter or a literal anywhere in the template
    text = json.dumps(resources)
    assert not re.search(r'"(MasterUserPassword|Password|AuthToken)": "[^{]', text)


def test_every_public_listener_authenticates_with_cognito(resources):
    albs = of_type(resources, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert [a["Properties"]["Scheme"] for a in albs.values()] == ["internet-facing"]
    listeners = of_type(resources, "AWS::ElasticLoadBalancingV2::Listener")
    assert {ls["Properties"]["Protocol"] for ls in listeners.values()} == {"HTTP", "HTTPS"}
    for name, listener in listeners.items():
        props = listener["Properties"]
        actions = sorted(props["DefaultActions"], key=lambda a: a.get("Order", 0))
        if props["Protocol"] == "HTTP":
            assert [a["Type"] for a in actions] == ["redirect"], name
            assert actions[0]["RedirectConfig"]["Protocol"] == "HTTPS"
            continue
        assert props["Certificates"], f"{name}: HTTPS needs the certificate"
        assert [a["Type"] for a in actions] == ["authenticate-cognito", "forward"], name
        config = actions[0]["AuthenticateCognitoConfig"]
        assert {"UserPoolArn", "UserPoolClientId", "UserPoolDomain"} <= set(config)
    for name, rule in of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule").items():
        first = min(rule["Properties"]["Actions"], key=lambda a: a.get("Order", 0))
        assert first["Type"] in ("authenticate-cognito", "redirect", "fixed-response"), name
    # the tasks take traffic from the ALB only
    for group in of_type(resources, "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            if rule.get("CidrIp") == "0.0.0.0/0":
                assert rule["FromPort"] in (80, 443), rule
    for user_pool in of_type(resources, "AWS::Cognito::UserPool").values():
        assert user_pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True


def test_settings_are_outputs(template):
    outputs = template.to_json()["Outputs"]
    described = {o.get("Description", "").split(":")[0] for o in outputs.values()}
    for name in (
        "STOCKPIPE_KAFKA_BOOTSTRAP",
        "STOCKPIPE_KAFKA_SECURITY_PROTOCOL",
        "STOCKPIPE_KAFKA_SASL_USERNAME",
        "STOCKPIPE_KAFKA_SASL_PASSWORD",
        "STOCKPIPE_PG_HOST",
        "STOCKPIPE_PG_PORT",
        "STOCKPIPE_PG_WRITER_PASSWORD",
        "STOCKPIPE_PG_READER_PASSWORD",
        "STOCKPIPE_REDIS_URL",
        "STOCKPIPE_STREAM_CHECKPOINT",
        "POLYGON_API_KEY",
    ):
        assert name in described
