"""stockpipe on AWS (docs/deploy-aws.md): one VPC; MSK (SASL/SCRAM over TLS), RDS PostgreSQL and
ElastiCache Redis in isolated subnets; MWAA and the dashboard's Fargate service in private subnets;
the only public endpoint is the dashboard's ALB, and it authenticates every request with Cognito.
Every secret lives in Secrets Manager (containers get them as ECS secrets); every value the
STOCKPIPE_* settings need is a stack output whose description starts with the variable's name.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_elasticloadbalancingv2_actions as elbv2_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import aws_mwaa as mwaa
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

KAFKA_VERSION = "3.8.x"
KAFKA_SCRAM_PORT = 9096  # MSK's SASL/SCRAM listener (TLS)
KAFKA_SCRAM_USER = "stockpipe"
PG_PORT = 5432
PG_VERSION = rds.PostgresEngineVersion.VER_17_9  # minor upgrades are automatic
REDIS_PORT = 6379
DASHBOARD_PORT = 8501
# The dashboard container (docs/deploy-aws.md). The Redis URL carries the auth token, so it is put
# together inside the container from two ECS secrets/variables instead of being stored in plain text.
DASHBOARD_COMMAND = (
    'STOCKPIPE_REDIS_URL="rediss://:$REDIS_AUTH_TOKEN@$REDIS_ENDPOINT/0" '
    "exec python -m streamlit run dashboard/app.py --server.address 0.0.0.0 "
    f"--server.port {DASHBOARD_PORT} --server.headless true --browser.gatherUsageStats false"
)


class StockpipeStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.outputs: dict[str, str] = {}  # setting name -> output logical id (tests read it)

        # --- inputs: context value, else a CloudFormation parameter --------------------------
        certificate_arn = self._input(
            "certificate_arn",
            "CertificateArn",
            "ACM certificate ARN of the dashboard's HTTPS listener (covers dashboard_domain)",
        )
        dashboard_domain = self._input(
            "dashboard_domain", "DashboardDomain", "DNS name users open the dashboard at (a CNAME/alias to the ALB)"
        )
        dashboard_image = self._input(
            "dashboard_image",
            "DashboardImage",
            "Container image of the dashboard (built from infra/docker/Dockerfile), e.g. "
            "<account>.dkr.ecr.<region>.amazonaws.com/stockpipe:<tag>",
        )
        cognito_prefix = self._input(
            "cognito_domain_prefix",
            "CognitoDomainPrefix",
            "Prefix of the Cognito hosted login domain (unique in the region)",
        )

        # --- network: public subnets hold only the ALB and the NAT gateway -------------------
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
        )
        self.vpc.add_flow_log("FlowLog")
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
        app_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        data_subnets = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

        key = kms.Key(
            self,
            "DataKey",
            enable_key_rotation=True,
            alias=f"alias/{self.stack_name.lower()}",
            description="stockpipe: secrets, MSK, RDS, ElastiCache and S3 encryption at rest",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

        # security groups: clients (MWAA workers, the dashboard) -> data services, nothing else
        def sg(name: str, description: str) -> ec2.SecurityGroup:
            return ec2.SecurityGroup(self, name, vpc=self.vpc, description=description, allow_all_outbound=False)

        workers_sg = ec2.SecurityGroup(self, "WorkersSg", vpc=self.vpc, description="MWAA workers (Spark drivers)")
        dashboard_sg = ec2.SecurityGroup(self, "DashboardSg", vpc=self.vpc, description="dashboard tasks")
        alb_sg = sg("AlbSg", "dashboard ALB: HTTPS from the internet, to the dashboard tasks only")
        msk_sg = sg("MskSg", "MSK brokers")
        pg_sg = sg("PostgresSg", "RDS PostgreSQL")
        redis_sg = sg("RedisSg", "ElastiCache Redis")
        workers_sg.add_ingress_rule(workers_sg, ec2.Port.all_traffic(), "MWAA components among themselves")
        for client in (workers_sg, dashboard_sg):
            msk_sg.add_ingress_rule(client, ec2.Port.tcp(KAFKA_SCRAM_PORT), "Kafka SASL/SCRAM over TLS")
            pg_sg.add_ingress_rule(client, ec2.Port.tcp(PG_PORT), "PostgreSQL")
            redis_sg.add_ingress_rule(client, ec2.Port.tcp(REDIS_PORT), "Redis over TLS")
        alb_sg.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS")
        alb_sg.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "HTTP, redirected to HTTPS")
        alb_sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "Cognito token endpoint (authenticate action)")
        dashboard_sg.add_ingress_rule(alb_sg, ec2.Port.tcp(DASHBOARD_PORT), "from the ALB only")
        alb_sg.add_egress_rule(dashboard_sg, ec2.Port.tcp(DASHBOARD_PORT), "to the dashboard tasks")

        # --- secrets ---------------------------------------------------------------------------
        def generated(name: str, description: str, username: str | None = None, length: int = 32):
            template = {}
            if username:
                template = {
                    "generate_string_key": "password",
                    "secret_string_template": json.dumps({"username": username}),
                }
            return secretsmanager.Secret(
                self,
                name,
                description=description,
                encryption_key=key,
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    exclude_punctuation=True, password_length=length, **template
                ),
            )

        # MSK's SCRAM secrets must be named AmazonMSK_* and encrypted with a customer managed key
        kafka_secret = secretsmanager.Secret(
            self,
            "KafkaScramSecret",
            secret_name=f"AmazonMSK_{self.stack_name}_{KAFKA_SCRAM_USER}",
            description="MSK SASL/SCRAM user of the pipeline (STOCKPIPE_KAFKA_SASL_*)",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": KAFKA_SCRAM_USER}),
                generate_string_key="password",
                exclude_punctuation=True,
                password_length=32,
            ),
        )
        writer_secret = generated(
            "PgWriterSecret", "STOCKPIPE_PG_WRITER_PASSWORD (role stockpipe_writer)", "stockpipe_writer"
        )
        reader_secret = generated(
            "PgReaderSecret", "STOCKPIPE_PG_READER_PASSWORD (role stockpipe_reader)", "stockpipe_reader"
        )
        redis_secret = generated("RedisAuthSecret", "ElastiCache auth token (in STOCKPIPE_REDIS_URL)", "default", 64)
        polygon_secret = secretsmanager.Secret(
            self,
            "PolygonApiKeySecret",
            encryption_key=key,
            description="POLYGON_API_KEY: replace the generated placeholder with your Polygon key",
        )

        # --- Kafka: MSK, SASL/SCRAM over TLS only, encrypted at rest with the key --------------
        broker_logs = logs.LogGroup(self, "MskLogs", retention=logs.RetentionDays.ONE_MONTH)
        cluster = msk.CfnCluster(
            self,
            "Kafka",
            cluster_name=f"{self.stack_name}-kafka",
            kafka_version=KAFKA_VERSION,
            number_of_broker_nodes=len(data_subnets.subnet_ids),
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                instance_type="kafka.m7g.large",
                client_subnets=data_subnets.subnet_ids,
                security_groups=[msk_sg.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(volume_size=100)
                ),
                connectivity_info=msk.CfnCluster.ConnectivityInfoProperty(
                    public_access=msk.CfnCluster.PublicAccessProperty(type="DISABLED")
                ),
            ),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(scram=msk.CfnCluster.ScramProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False),
            ),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_at_rest=msk.CfnCluster.EncryptionAtRestProperty(data_volume_kms_key_id=key.key_arn),
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(client_broker="TLS", in_cluster=True),
            ),
            logging_info=msk.CfnCluster.LoggingInfoProperty(
                broker_logs=msk.CfnCluster.BrokerLogsProperty(
                    cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(
                        enabled=True, log_group=broker_logs.log_group_name
                    )
                )
            ),
        )
        scram = msk.CfnBatchScramSecret(
            self, "KafkaScramUsers", cluster_arn=cluster.attr_arn, secret_arn_list=[kafka_secret.secret_arn]
        )
        # MSK has no CloudFormation attribute for its bootstrap string: ask the API once deployed
        brokers = cr.AwsCustomResource(
            self,
            "KafkaBootstrap",
            on_update=cr.AwsSdkCall(
                service="Kafka",
                action="getBootstrapBrokers",
                parameters={"ClusterArn": cluster.attr_arn},
                physical_resource_id=cr.PhysicalResourceId.of(cluster.attr_arn),
                output_paths=["BootstrapBrokerStringSaslScram"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["kafka:GetBootstrapBrokers"], resources=[cluster.attr_arn])]
            ),
            install_latest_aws_sdk=False,
        )
        brokers.node.add_dependency(scram)
        kafka_bootstrap = brokers.get_response_field("BootstrapBrokerStringSaslScram")

        # --- PostgreSQL: RDS, isolated subnets, encrypted, TLS forced, admin secret generated --
        pg_params = rds.ParameterGroup(
            self,
            "PostgresParams",
            engine=rds.DatabaseInstanceEngine.postgres(version=PG_VERSION),
            parameters={"rds.force_ssl": "1"},
        )
        database = rds.DatabaseInstance(
            self,
            "Postgres",
            engine=rds.DatabaseInstanceEngine.postgres(version=PG_VERSION),
            instance_type=ec2.InstanceType.of(ec2.InstanceClass.M7G, ec2.InstanceSize.LARGE),
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[pg_sg],
            publicly_accessible=False,
            multi_az=True,
            storage_encrypted=True,
            storage_encryption_key=key,
            allocated_storage=100,
            max_allocated_storage=1000,
            storage_type=rds.StorageType.GP3,
            credentials=rds.Credentials.from_generated_secret(
                "postgres", encryption_key=key, exclude_characters=" %+~`#$&*()|[]{}:;<>?!'/@\"\\"
            ),
            database_name="stockpipe",
            parameter_group=pg_params,
            backup_retention=cdk.Duration.days(7),
            deletion_protection=True,
            enable_performance_insights=True,
            performance_insight_encryption_key=key,
            cloudwatch_logs_exports=["postgresql"],
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
        )

        # --- Redis: ElastiCache, cluster mode disabled, primary + replica, TLS + auth token ----
        redis_subnets = elasticache.CfnSubnetGroup(
            self, "RedisSubnets", description="stockpipe Redis (isolated subnets)", subnet_ids=data_subnets.subnet_ids
        )
        redis = elasticache.CfnReplicationGroup(
            self,
            "Redis",
            replication_group_description="stockpipe latest state, pub/sub, rate limit, checkpoints",
            engine="redis",
            engine_version="7.1",
            cache_node_type="cache.t4g.small",
            num_cache_clusters=2,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            cache_subnet_group_name=redis_subnets.ref,
            security_group_ids=[redis_sg.security_group_id],
            at_rest_encryption_enabled=True,
            kms_key_id=key.key_arn,
            transit_encryption_enabled=True,
            auth_token=redis_secret.secret_value_from_json("password").unsafe_unwrap(),  # a dynamic reference
            port=REDIS_PORT,
            snapshot_retention_limit=3,
        )
        redis_endpoint = f"{redis.attr_primary_end_point_address}:{redis.attr_primary_end_point_port}"

        # --- S3: Spark checkpoints and MWAA's DAG bucket, private, encrypted, TLS only -------
        def bucket(name: str) -> s3.Bucket:
            return s3.Bucket(
                self,
                name,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                removal_policy=cdk.RemovalPolicy.RETAIN,
            )

        checkpoints = bucket("CheckpointBucket")
        dags = bucket("AirflowBucket")  # MWAA: dags/, plugins.zip, requirements.txt (versioning is required)

        # --- MWAA: private web server, workers in the app subnets -------------------------------
        mwaa_name = f"{self.stack_name}-airflow"
        mwaa_role = iam.Role(
            self,
            "AirflowRole",
            assumed_by=iam.CompositePrincipal(
                iam.ServicePrincipal("airflow.amazonaws.com"), iam.ServicePrincipal("airflow-env.amazonaws.com")
            ),
        )
        dags.grant_read(mwaa_role)
        checkpoints.grant_read_write(mwaa_role)
        key.grant_encrypt_decrypt(mwaa_role)
        for secret in (kafka_secret, writer_secret, reader_secret, redis_secret, polygon_secret):
            secret.grant_read(mwaa_role)
        database.secret.grant_read(mwaa_role)  # the migrate task (python -m stockpipe.storage.migrate)
        mwaa_role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[
                    self.format_arn(
                        service="secretsmanager",
                        resource="secret",
                        resource_name="airflow/*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        mwaa_role.add_to_policy(
            iam.PolicyStatement(
                actions=["airflow:PublishMetrics"],
                resources=[self.format_arn(service="airflow", resource="environment", resource_name=mwaa_name)],
            )
        )
        mwaa_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogStream",
                    "logs:CreateLogGroup",
                    "logs:PutLogEvents",
                    "logs:GetLogEvents",
                    "logs:GetLogRecord",
                    "logs:GetLogGroupFields",
                    "logs:GetQueryResults",
                    "logs:DescribeLogGroups",
                ],
                resources=[
                    self.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"airflow-{mwaa_name}-*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        mwaa_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:SendMessage",
                ],
                resources=[self.format_arn(service="sqs", account="*", resource="airflow-celery-*")],
            )
        )
        mwaa_role.add_to_policy(iam.PolicyStatement(actions=["cloudwatch:PutMetricData"], resources=["*"]))
        log_config = mwaa.CfnEnvironment.ModuleLoggingConfigurationProperty(enabled=True, log_level="INFO")
        airflow = mwaa.CfnEnvironment(
            self,
            "Airflow",
            name=mwaa_name,
            airflow_version=self.node.try_get_context("mwaa_airflow_version") or "3.0.6",
            environment_class="mw1.small",
            execution_role_arn=mwaa_role.role_arn,
            source_bucket_arn=dags.bucket_arn,
            dag_s3_path="dags",
            kms_key=key.key_arn,
            webserver_access_mode="PRIVATE_ONLY",
            network_configuration=mwaa.CfnEnvironment.NetworkConfigurationProperty(
                subnet_ids=self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids,
                security_group_ids=[workers_sg.security_group_id],
            ),
            logging_configuration=mwaa.CfnEnvironment.LoggingConfigurationProperty(
                dag_processing_logs=log_config,
                scheduler_logs=log_config,
                task_logs=log_config,
                webserver_logs=log_config,
                worker_logs=log_config,
            ),
            airflow_configuration_options={
                "secrets.backend": "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend",
                "secrets.backend_kwargs": json.dumps(
                    {"connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables"}
                ),
            },
        )
        key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com"))
        airflow.node.add_dependency(mwaa_role.node.find_child("DefaultPolicy"))  # its permissions, not just the role

        # --- dashboard: Fargate behind an ALB that logs users in with Cognito ------------------
        user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(min_length=12),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        login_domain = user_pool.add_domain(
            "Login", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=cognito_prefix)
        )
        client = user_pool.add_client(
            "Dashboard",
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[f"https://{dashboard_domain}/oauth2/idpresponse"],
            ),
        )

        ecs_cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)
        task = ecs.FargateTaskDefinition(self, "DashboardTask", cpu=512, memory_limit_mib=1024)
        task.add_container(
            "dashboard",
            image=ecs.ContainerImage.from_registry(dashboard_image),
            entry_point=["sh", "-c"],
            command=[DASHBOARD_COMMAND],
            port_mappings=[ecs.PortMapping(container_port=DASHBOARD_PORT)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="dashboard",
                log_group=logs.LogGroup(self, "DashboardLogs", retention=logs.RetentionDays.ONE_MONTH),
            ),
            environment={
                "STOCKPIPE_PG_HOST": database.db_instance_endpoint_address,
                "STOCKPIPE_PG_PORT": database.db_instance_endpoint_port,
                "STOCKPIPE_PG_DATABASE": "stockpipe",
                "STOCKPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "STOCKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STOCKPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "STOCKPIPE_KAFKA_SASL_USERNAME": KAFKA_SCRAM_USER,
                "REDIS_ENDPOINT": redis_endpoint,
                "STOCKPIPE_DASHBOARD_PORT": str(DASHBOARD_PORT),
                "PGSSLMODE": "require",
            },
            secrets={
                "STOCKPIPE_PG_READER_PASSWORD": ecs.Secret.from_secrets_manager(reader_secret, "password"),
                "STOCKPIPE_KAFKA_SASL_PASSWORD": ecs.Secret.from_secrets_manager(kafka_secret, "password"),
                "REDIS_AUTH_TOKEN": ecs.Secret.from_secrets_manager(redis_secret, "password"),
            },
        )
        service = ecs.FargateService(
            self,
            "Dashboard",
            cluster=ecs_cluster,
            task_definition=task,
            desired_count=1,
            vpc_subnets=app_subnets,
            security_groups=[dashboard_sg],
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )
        alb = elbv2.ApplicationLoadBalancer(
            self,
            "DashboardAlb",
            vpc=self.vpc,
            internet_facing=True,
            security_group=alb_sg,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            drop_invalid_header_fields=True,
        )
        target = elbv2.ApplicationTargetGroup(
            self,
            "DashboardTarget",
            vpc=self.vpc,
            port=DASHBOARD_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[service],
            health_check=elbv2.HealthCheck(path="/_stcore/health"),
        )
        alb.add_listener(
            "Https",
            port=443,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            open=False,
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            certificates=[acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)],
            default_action=elbv2_actions.AuthenticateCognitoAction(
                user_pool=user_pool,
                user_pool_client=client,
                user_pool_domain=login_domain,
                next=elbv2.ListenerAction.forward([target]),
            ),
        )
        alb.add_listener(
            "Http",
            port=80,
            open=False,
            default_action=elbv2.ListenerAction.redirect(protocol="HTTPS", port="443", permanent=True),
        )

        # --- what the settings need (docs/deploy-aws.md, "Settings that change") --------------
        self._setting("STOCKPIPE_KAFKA_BOOTSTRAP", kafka_bootstrap, "MSK's SASL/SCRAM bootstrap string")
        self._setting("STOCKPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        self._setting("STOCKPIPE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        self._setting("STOCKPIPE_KAFKA_SASL_USERNAME", KAFKA_SCRAM_USER)
        self._setting("STOCKPIPE_KAFKA_SASL_PASSWORD", kafka_secret.secret_arn, "secret ARN, JSON key 'password'")
        self._setting("STOCKPIPE_PG_HOST", database.db_instance_endpoint_address)
        self._setting("STOCKPIPE_PG_PORT", database.db_instance_endpoint_port)
        self._setting("STOCKPIPE_PG_DATABASE", "stockpipe")
        self._setting("STOCKPIPE_PG_ADMIN_USER", "postgres")
        self._setting(
            "STOCKPIPE_PG_ADMIN_PASSWORD",
            database.secret.secret_arn,
            "secret ARN, JSON key 'password' (migrations only)",
        )
        self._setting("STOCKPIPE_PG_WRITER_PASSWORD", writer_secret.secret_arn, "secret ARN, JSON key 'password'")
        self._setting("STOCKPIPE_PG_READER_PASSWORD", reader_secret.secret_arn, "secret ARN, JSON key 'password'")
        self._setting(
            "STOCKPIPE_REDIS_URL",
            f"rediss://:<auth-token>@{redis_endpoint}/0",
            "<auth-token>: JSON key 'password' of the secret in output RedisAuthTokenSecret",
        )
        self._setting("STOCKPIPE_STREAM_CHECKPOINT", f"s3a://{checkpoints.bucket_name}/checkpoints/stream_indicators")
        self._setting("STOCKPIPE_PRODUCER_MODE", "airflow")
        self._setting("POLYGON_API_KEY", polygon_secret.secret_arn, "secret ARN (plain string): put your key in it")
        cdk.CfnOutput(
            self,
            "RedisAuthTokenSecret",
            value=redis_secret.secret_arn,
            description="Secrets Manager ARN of the Redis auth token (JSON key 'password')",
        )
        cdk.CfnOutput(
            self,
            "AirflowBucketName",
            value=dags.bucket_name,
            description="MWAA source bucket: upload dags/ to dags/, plugins.zip, requirements.txt",
        )
        cdk.CfnOutput(self, "AirflowWebserverUrl", value=airflow.attr_webserver_url)
        cdk.CfnOutput(
            self,
            "DashboardAlbDns",
            value=alb.load_balancer_dns_name,
            description="point the dashboard domain (CNAME/alias) here",
        )
        cdk.CfnOutput(self, "DashboardUrl", value=f"https://{dashboard_domain}/")
        cdk.CfnOutput(
            self,
            "UserPoolId",
            value=user_pool.user_pool_id,
            description="add dashboard users here (self sign-up is off)",
        )

    # ------------------------------------------------------------------------------------------
    @property
    def availability_zones(self) -> list[str]:
        """Context `availability_zones` (comma-separated), else the region's first two (Fn::GetAZs at
        deploy time): synth never needs an AWS lookup, even with a concrete account and region."""
        configured = self.node.try_get_context("availability_zones")
        if configured:
            return configured.split(",") if isinstance(configured, str) else list(configured)
        return [cdk.Fn.select(i, cdk.Fn.get_azs()) for i in range(2)]

    def _input(self, context_key: str, parameter_id: str, description: str) -> str:
        value = self.node.try_get_context(context_key)
        if value:
            return str(value)
        return cdk.CfnParameter(
            self, parameter_id, type="String", description=description, min_length=1
        ).value_as_string

    def _setting(self, name: str, value: str, note: str = "") -> None:
        logical_id = "Setting" + "".join(part.capitalize() for part in name.split("_"))
        cdk.CfnOutput(self, logical_id, value=value, description=f"{name}" + (f": {note}" if note else ""))
        self.outputs[name] = logical_id
