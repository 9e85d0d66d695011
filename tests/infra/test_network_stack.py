"""Network stack: private subnets, endpoints for every API the platform calls, flow logs."""

from __future__ import annotations

from aws_cdk.assertions import Match

from stacks.components.private_network import INTERFACE_ENDPOINTS
from tests.infra.synth import Synthesized

REQUIRED_SERVICES = {
    "sagemaker.api",
    "sagemaker.runtime",
    "studio",
    "ecr.api",
    "ecr.dkr",
    "logs",
    "sts",
    "kms",
    "states",
}


def endpoint_service_names(synthesized: Synthesized) -> list[str]:
    names = []
    for endpoint in (
        synthesized.template("Network").find_resources("AWS::EC2::VPCEndpoint").values()
    ):
        name = endpoint["Properties"]["ServiceName"]
        names.append(name if isinstance(name, str) else str(name))
    return names


def test_interface_endpoints_cover_every_api_studio_and_training_call(dev: Synthesized) -> None:
    names = " ".join(endpoint_service_names(dev))
    for service in REQUIRED_SERVICES:
        assert service in names, service
    template = dev.template("Network")
    template.resource_properties_count_is(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Interface", "PrivateDnsEnabled": True},
        len(INTERFACE_ENDPOINTS),
    )
    template.resource_properties_count_is(
        "AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"}, 1
    )


def test_dev_vpc_has_two_azs_nat_egress_and_no_public_ips(dev: Synthesized) -> None:
    template = dev.template("Network")
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::NatGateway", 2)
    template.resource_count_is("AWS::EC2::Subnet", 4)
    template.all_resources_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})


def test_flow_logs_capture_all_traffic_to_an_encrypted_retained_log_group(dev: Synthesized) -> None:
    template = dev.template("Network")
    template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"},
    )
    template.has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {"KmsKeyId": Match.any_value(), "RetentionInDays": 365},
            "DeletionPolicy": "Retain",
        },
    )


def test_workload_group_allows_only_https_out_and_itself(dev: Synthesized) -> None:
    groups = dev.template("Network").find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": Match.string_like_regexp("^Studio apps")}},
    )
    (group,) = groups.values()
    egress = group["Properties"]["SecurityGroupEgress"]
    assert egress == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "HTTPS to AWS APIs and, with egress, the Hub",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_endpoints_admit_https_from_the_vpc_only(dev: Synthesized) -> None:
    dev.template("Network").has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": "Interface VPC endpoints: HTTPS from inside the VPC",
            "SecurityGroupIngress": [
                Match.object_like({"CidrIp": "10.64.0.0/16", "FromPort": 443, "ToPort": 443})
            ],
        },
    )


def test_prod_uses_the_existing_vpc_without_nat_or_new_vpc(prod: Synthesized) -> None:
    template = prod.template("Network")
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcId": "vpc-0a1b2c3d4e5f60718",
            "SubnetIds": ["subnet-0a1b2c3d4e5f60718", "subnet-1a2b3c4d5e6f70819"],
        },
    )
