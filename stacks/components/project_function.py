"""The platform's Lambda functions: one factory fixes runtime, layout, logging, tracing, network."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.components.encrypted_log_group import encrypted_log_group
from stacks.components.managed_policy_role import ManagedPolicyRole
from stacks.nag import acknowledge, acknowledge_wildcard_resources

#: Powertools for AWS Lambda (Python) V3 layer, published by AWS in every commercial region; it
#: carries Powertools, pydantic v2 and the X-Ray SDK, built for this runtime and architecture.
POWERTOOLS_LAYER = (
    "arn:{partition}:lambda:{region}:017000801446:layer:"
    "AWSLambdaPowertoolsPythonV3-python314-arm64:38"
)
EXCLUDED_FROM_ASSET = ["__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache"]
#: The training code folder, and the modules of it the functions import: standard library only
#: and self-contained (see the docstring of llm_sft/datacheck.py for why the rules live there).
TRAINING_CODE = Path(__file__).resolve().parents[2] / "training_code"
SHARED_TRAINING_MODULES = ("llm_sft/datacheck.py", "llm_sft/strategy.py")


def stage_function_code(code_dir: Path, training_code: Path = TRAINING_CODE) -> Path:
    """The functions' code, assembled in a temporary folder (removed when the process ends, after
    synthesis has copied it into the cloud assembly): ``code_dir`` without caches, plus each of
    ``SHARED_TRAINING_MODULES`` at the same path (``llm_sft/...``, with an empty ``__init__.py``),
    so the functions import the training code's module by the name the training job and the CLI
    use. Only copies: the same sources give the same bytes, hence the same asset hash."""
    folder = Path(tempfile.mkdtemp(prefix="llmft-function-code-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    code = folder / "code"
    shutil.copytree(code_dir, code, ignore=shutil.ignore_patterns(*EXCLUDED_FROM_ASSET))
    for module in SHARED_TRAINING_MODULES:
        target = code / module
        if target.exists():
            raise FileExistsError(
                f"{code_dir} has {module} of its own; it comes from {training_code}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(training_code / module, target)
        (target.parent / "__init__.py").touch()
    return code


def function_code(code_dir: Path) -> lambda_.Code:
    """The functions' code asset, hashed by its content (a change in a shared module redeploys
    the functions). Assembled before synthesis rather than with CDK bundling: local bundling
    would need a Docker image it never uses and prints a line to stderr on every synthesis (the
    local backend synthesizes inside CLI commands)."""
    return lambda_.Code.from_asset(str(stage_function_code(code_dir)))


class ProjectFunction(Construct):
    """A Python 3.14 arm64 function from ``lambdas/`` with its own least-privilege role, JSON
    logs to an encrypted log group, X-Ray tracing, reserved concurrency, and network interfaces
    in the platform's private subnets.

    The whole ``lambdas/`` folder, plus the training code's data rules (``llm_sft/datacheck.py``,
    see ``stage_function_code``), is the code asset (shared ``runspec`` included), so all functions
    share one asset; ``handler`` picks the module (e.g. ``launch_run.handler.handler``).

    Props:
        handler / description / environment / timeout_seconds / memory_size: its own.
        code_dir: the ``lambdas/`` folder.
        vpc / subnets / security_group: where its network interfaces go.
        encryption_key / log_retention_days: its log group.
        reserved_concurrency: upper bound of concurrent executions (runs are rare, this bounds
            the blast radius of a runaway caller).
        function_name: a fixed name when other stacks grant on it (default: generated).

    Attributes:
        function: the Lambda function.
        role: its execution role (permissions in a managed policy).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        code_dir: Path,
        environment: dict[str, str],
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        encryption_key: kms.IKey,
        log_retention_days: int,
        timeout_seconds: int = 60,
        memory_size: int = 512,
        reserved_concurrency: int = 10,
        function_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        log_group = encrypted_log_group(
            self, "Logs", encryption_key=encryption_key, retention_days=log_retention_days
        )
        self.role = ManagedPolicyRole(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=description,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{log_group.log_group_arn}"],
            )
        )
        # Lambda manages the function's ENIs with the execution role. Describe calls support no
        # resource scoping; the rest is confined to the platform VPC's subnets.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ManageVpcInterfaces",
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=["*"],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=function_code(code_dir),
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(
                    self,
                    "Powertools",
                    POWERTOOLS_LAYER.format(partition=stack.partition, region=stack.region),
                )
            ],
            environment={
                **environment,
                "POWERTOOLS_SERVICE_NAME": construct_id,
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
            role=self.role,
            timeout=cdk.Duration.seconds(timeout_seconds),
            memory_size=memory_size,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security_group],
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "Lambda creates and describes the function's network interfaces and X-Ray segments "
            "with the execution role; these EC2 and X-Ray actions support no resource scoping.",
            "*",
        )
        acknowledge(
            self.function,
            "Invoked synchronously by Step Functions (or a person starting a run); a failure is "
            "returned to the caller, which catches and records it, so an asynchronous "
            "dead-letter queue would never receive anything.",
            "Serverless-LambdaDLQ",
            "HIPAA.Security-LambdaDLQ",
            "NIST.800.53.R5-LambdaDLQ",
        )
