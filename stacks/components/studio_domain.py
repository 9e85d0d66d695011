"""A SageMaker Studio domain in VPC-only mode, with user profiles."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class StudioDomain(Construct):
    """A Studio domain with IAM auth, all traffic through the VPC (``VpcOnly``), storage
    encrypted with the platform key, idle shutdown of JupyterLab and Code Editor apps, and one
    user profile per configured user. Domain and profiles are retained on stack deletion (the
    domain's EFS holds users' home directories).

    Props:
        domain_name: the domain's name.
        vpc / subnets / security_group: where apps run.
        encryption_key: encrypts the domain's EFS and app volumes.
        execution_role: default role of users and spaces.
        user_names: user profiles to create.
        default_instance_type: JupyterLab's default instance type.
        idle_timeout_minutes: idle apps shut down after this long.
        lifecycle_config_arn: JupyterLab's default lifecycle configuration (runs at every app
            start; default none).

    Attributes:
        domain: the L1 domain; ``domain_id`` its id.
        user_profiles: the L1 user profiles by user name.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        domain_name: str,
        vpc: ec2.IVpc,
        subnets: ec2.SelectedSubnets,
        security_group: ec2.ISecurityGroup,
        encryption_key: kms.IKey,
        execution_role: iam.IRole,
        user_names: Sequence[str],
        default_instance_type: str,
        idle_timeout_minutes: int,
        lifecycle_config_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        idle_settings = sagemaker.CfnDomain.IdleSettingsProperty(
            lifecycle_management="ENABLED",
            idle_timeout_in_minutes=idle_timeout_minutes,
            min_idle_timeout_in_minutes=min(60, idle_timeout_minutes),
            max_idle_timeout_in_minutes=max(idle_timeout_minutes, 240),
        )
        lifecycle = sagemaker.CfnDomain.AppLifecycleManagementProperty(idle_settings=idle_settings)
        security_groups = [security_group.security_group_id]
        self.domain = sagemaker.CfnDomain(
            self,
            "Domain",
            domain_name=domain_name,
            auth_mode="IAM",
            app_network_access_type="VpcOnly",
            vpc_id=vpc.vpc_id,
            subnet_ids=subnets.subnet_ids,
            kms_key_id=encryption_key.key_arn,
            tag_propagation="ENABLED",
            default_user_settings=sagemaker.CfnDomain.UserSettingsProperty(
                execution_role=execution_role.role_arn,
                security_groups=security_groups,
                studio_web_portal="ENABLED",
                default_landing_uri="studio::",
                jupyter_lab_app_settings=sagemaker.CfnDomain.JupyterLabAppSettingsProperty(
                    default_resource_spec=sagemaker.CfnDomain.ResourceSpecProperty(
                        instance_type=default_instance_type,
                        lifecycle_config_arn=lifecycle_config_arn,
                    ),
                    lifecycle_config_arns=[lifecycle_config_arn] if lifecycle_config_arn else None,
                    app_lifecycle_management=lifecycle,
                ),
                code_editor_app_settings=sagemaker.CfnDomain.CodeEditorAppSettingsProperty(
                    default_resource_spec=sagemaker.CfnDomain.ResourceSpecProperty(
                        instance_type=default_instance_type
                    ),
                    app_lifecycle_management=lifecycle,
                ),
            ),
            default_space_settings=sagemaker.CfnDomain.DefaultSpaceSettingsProperty(
                execution_role=execution_role.role_arn,
                security_groups=security_groups,
            ),
        )
        self.domain.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.domain_id = self.domain.attr_domain_id

        self.user_profiles: dict[str, sagemaker.CfnUserProfile] = {}
        for user_name in user_names:
            profile = sagemaker.CfnUserProfile(
                self,
                f"User-{user_name}",
                domain_id=self.domain_id,
                user_profile_name=user_name,
                user_settings=sagemaker.CfnUserProfile.UserSettingsProperty(
                    execution_role=execution_role.role_arn,
                    security_groups=security_groups,
                ),
            )
            profile.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
            self.user_profiles[user_name] = profile
