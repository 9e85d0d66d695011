"""The record function: run milestones in SageMaker Experiments and the run record in S3."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from record_run.mlflow_rest import RECORD_MLFLOW_CALLS
from stacks.components.arns import PlatformArns
from stacks.components.functions.placement import FunctionPlacement
from stacks.components.key_use import READ_WRITE, use_key_via
from stacks.components.project_function import ProjectFunction
from stacks.data_stack import MODELS_PREFIX, RUNS_PREFIX
from stacks.nag import acknowledge_wildcard_resources

__all__ = ["RecordFunction"]


class RecordFunction(ProjectFunction):
    """Writes run records under runs/, the run's experiment, trial and components, reads the
    finished job, what the job wrote beside the model (serving contract, evaluation summary) and
    the approved packages the gate compares with, and, with ``mlflow_app_arn``, adds the run's
    later facts (gate, package, endpoint, cost) to its MLflow run; nothing else."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        placement: FunctionPlacement,
        artifacts_bucket: s3.IBucket,
        arns: PlatformArns,
        mlflow_app_arn: str | None = None,
    ) -> None:
        environment = {"FT_ARTIFACTS_BUCKET": artifacts_bucket.bucket_name}
        if mlflow_app_arn is not None:
            environment["FT_MLFLOW_TRACKING_URI"] = mlflow_app_arn
        super().__init__(
            scope,
            construct_id,
            handler="record_run.handler.handler",
            description="Records run milestones in SageMaker Experiments and the run record",
            environment=environment,
            **placement.props(),
        )
        runs = artifacts_bucket.arn_for_objects(f"{RUNS_PREFIX}/*")
        contracts = artifacts_bucket.arn_for_objects(f"{MODELS_PREFIX}/*/serving_contract.json")
        summaries = artifacts_bucket.arn_for_objects(f"{MODELS_PREFIX}/*/evaluation_summary.json")
        experiments = [arns.experiments, arns.trials, arns.trial_components]
        grants = [
            ("WriteRunRecords", ["s3:GetObject", "s3:PutObject"], [runs], None),
            # Both sides' versions, from the manifest the job writes beside the model; what the
            # evaluation measured and on what (llm_sft.evaluation), beside it.
            ("ReadServingContract", ["s3:GetObject"], [contracts, summaries], None),
            (
                "ReadRunRecordsPrefix",
                ["s3:ListBucket"],
                [artifacts_bucket.bucket_arn],
                {"StringLike": {"s3:prefix": [f"{RUNS_PREFIX}/*", f"{MODELS_PREFIX}/*"]}},
            ),
            (
                "RecordInExperiments",
                [
                    "sagemaker:CreateExperiment",
                    "sagemaker:CreateTrial",
                    "sagemaker:CreateTrialComponent",
                    "sagemaker:UpdateTrialComponent",
                    "sagemaker:AssociateTrialComponent",
                    "sagemaker:DescribeTrialComponent",
                    "sagemaker:AddTags",
                ],
                experiments,
                None,
            ),
            (
                "ReadRunResults",
                ["sagemaker:DescribeTrainingJob", "sagemaker:DescribeModelPackage"],
                [arns.training_jobs, arns.packages],
                None,
            ),
            # ListModelPackages supports no resource-level permissions.
            ("FindBestApprovedModel", ["sagemaker:ListModelPackages"], ["*"], None),
        ]
        if mlflow_app_arn is not None:
            # MLflow Apps authorize every REST call with CallMlflowAppApi; the sagemaker-mlflow
            # actions are those of tracking servers, for the calls this function makes.
            grants.append(
                (
                    "AddToMlflowRuns",
                    [
                        "sagemaker:CallMlflowAppApi",
                        *(f"sagemaker-mlflow:{call}" for call in RECORD_MLFLOW_CALLS),
                    ],
                    [mlflow_app_arn],
                    None,
                )
            )
        for sid, actions, resources, conditions in grants:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid=sid, actions=actions, resources=resources, conditions=conditions
                )
            )
        use_key_via(
            self.role,
            placement.encryption_key,
            services=["s3"],
            actions=READ_WRITE,
            sid="ReadWriteEncrypted",
        )
        acknowledge_wildcard_resources(
            self.role.policy,
            "Run records live under runs/<run id>/; experiments, trials and trial components "
            "are named <prefix>-...; training jobs <prefix>-<run id>; packages are numbered "
            "versions in the platform's group; ListModelPackages takes no resource.",
            runs,
            contracts,
            summaries,
            *experiments,
            arns.training_jobs,
            arns.packages,
            "*",
        )
