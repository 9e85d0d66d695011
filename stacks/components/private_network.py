"""The VPC that Studio, training jobs, endpoints and the workflow's Lambdas run in."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.encrypted_log_group import encrypted_log_group
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.config import ExistingVpc
from stacks.nag import acknowledge_in_packs

#: Interface endpoints for every AWS API that Studio, training jobs, endpoints and the workflow's
#: Lambdas call from inside the VPC. With them, a VPC without internet egress still works.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "SageMakerStudio": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_STUDIO,
    "SageMakerNotebook": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_NOTEBOOK,
    # MLflow tracking (SageMaker AI MLflow) and SageMaker Experiments/metrics.
    "SageMakerExperiments": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_EXPERIMENTS,
    "SageMakerMetrics": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_METRICS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "CloudWatchLogs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "CloudWatchMonitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "StepFunctions": ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
}


class PrivateNetwork(Construct):
    """Private subnets in two AZs, VPC endpoints, and (for a VPC it creates) flow logs.

    Props:
        cidr: CIDR of the VPC to create (ignored when ``existing_vpc`` is given).
        existing_vpc: ids of a VPC to use instead; no lookup is made, and flow logs stay with the
            VPC's owner.
        internet_egress: add public subnets and one NAT gateway per AZ for outbound internet
            (Hugging Face Hub downloads). Without it the private subnets are isolated.
        encryption_key: encrypts the flow log group.
        log_retention_days: flow log retention.
        bedrock_runtime: add a bedrock-runtime interface endpoint (default False): training
            jobs call a Bedrock judge when the configuration lists judge models.

    Attributes:
        vpc: the VPC.
        private_subnets: the subnets workloads run in.
        workload_security_group: the group Studio apps, training jobs, endpoints and Lambdas use;
            it allows traffic between its members (distributed training, Studio's NFS) and HTTPS
            to the endpoints.
        endpoint_security_group: the group of the interface endpoints (HTTPS from the VPC CIDR).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        existing_vpc: ExistingVpc | None,
        internet_egress: bool,
        encryption_key: kms.IKey,
        log_retention_days: int,
        bedrock_runtime: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        if existing_vpc is not None:
            self.vpc: ec2.IVpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=existing_vpc.vpc_id,
                vpc_cidr_block=existing_vpc.cidr,
                availability_zones=list(existing_vpc.availability_zones),
                private_subnet_ids=list(existing_vpc.private_subnet_ids),
                private_subnet_route_table_ids=list(existing_vpc.private_subnet_route_table_ids),
            )
            vpc_cidr = existing_vpc.cidr
            private_type = ec2.SubnetType.PRIVATE_WITH_EGRESS
        else:
            private_type = (
                ec2.SubnetType.PRIVATE_WITH_EGRESS
                if internet_egress
                else ec2.SubnetType.PRIVATE_ISOLATED
            )
            subnets = [ec2.SubnetConfiguration(name="private", subnet_type=private_type)]
            if internet_egress:
                subnets.append(
                    ec2.SubnetConfiguration(
                        name="public",
                        subnet_type=ec2.SubnetType.PUBLIC,
                        cidr_mask=26,
                        # Only NAT gateways live here, and they use Elastic IPs.
                        map_public_ip_on_launch=False,
                    )
                )
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(cidr),
                max_azs=2,
                # One NAT per AZ: losing an AZ must not cut the other AZ's training jobs off.
                nat_gateways=2 if internet_egress else 0,
                subnet_configuration=subnets,
                restrict_default_security_group=False,
            )
            self._acknowledge_unused_default_security_group(vpc)
            flow_logs = encrypted_log_group(
                self,
                "FlowLogs",
                encryption_key=encryption_key,
                retention_days=log_retention_days,
            )
            flow_log_role = ManagedPolicyRole(
                self,
                "FlowLogRole",
                assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com"),
                description="VPC flow logs delivery to CloudWatch Logs",
            )
            vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs, flow_log_role),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )
            if internet_egress:
                for subnet in vpc.public_subnets:
                    acknowledge_in_packs(
                        subnet.node.find_child("DefaultRoute"),
                        "The public subnets hold only the NAT gateways that give private "
                        "training jobs HTTPS egress to the Hugging Face Hub; no workload runs "
                        "in them. Regulated environments set internet_egress=False.",
                        "VPCNoUnrestrictedRouteToIGW",
                    )
            self.vpc = vpc
            vpc_cidr = cidr

        self.private_subnets = self.vpc.select_subnets(subnet_type=private_type)

        self.workload_security_group = ec2.SecurityGroup(
            self,
            "WorkloadSecurityGroup",
            vpc=self.vpc,
            description="Studio apps, training jobs, endpoints and workflow Lambdas",
            allow_all_outbound=False,
        )
        self.workload_security_group.add_ingress_rule(
            self.workload_security_group,
            ec2.Port.all_tcp(),
            "Members talk to each other: distributed training and Studio's EFS/NFS",
        )
        self.workload_security_group.add_egress_rule(
            self.workload_security_group, ec2.Port.all_tcp(), "Distributed training and NFS"
        )
        # HTTPS only. Where it may go is decided by routing: VPC endpoints and the S3 gateway
        # always; the internet (Hugging Face Hub) only through NAT when egress is on. The S3
        # prefix list id differs per region and cannot be looked up at synth, hence 0.0.0.0/0.
        self.workload_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs and, with egress, the Hub"
        )
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface VPC endpoints: HTTPS from inside the VPC",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(vpc_cidr), ec2.Port.tcp(443), "HTTPS to AWS APIs from the VPC"
        )

        subnet_selection = ec2.SubnetSelection(subnets=self.private_subnets.subnets)
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[subnet_selection]
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        services = dict(INTERFACE_ENDPOINTS)
        if bedrock_runtime:
            # The judge's Converse calls from training jobs; only when judges are configured
            # (an interface endpoint is billed per hour and AZ).
            services["BedrockRuntime"] = ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME
        for name, service in services.items():
            self.interface_endpoints[name] = self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=subnet_selection,
                security_groups=[self.endpoint_security_group],
                private_dns_enabled=True,
                # The endpoint group's own rule admits HTTPS from the VPC CIDR; `open` would add
                # a second rule on the CIDR token that compliance checks cannot evaluate.
                open=False,
            )

    def _acknowledge_unused_default_security_group(self, vpc: ec2.Vpc) -> None:
        """CloudFormation cannot remove the default security group's rules; CDK's
        ``restrict_default_security_group`` does it with a Lambda-backed custom resource, which
        brings its own unscoped role and findings. Nothing is ever placed in the default group,
        so its rules are never in effect; that is the acknowledged reason."""
        acknowledge_in_packs(
            vpc,
            "No resource of the platform is placed in the VPC's default security group; every "
            "workload gets the workload or endpoint security group, so its default rules are "
            "never in effect.",
            "VPCDefaultSecurityGroupClosed",
        )
