"""Which IAM authorizations AWS performs for each API call the platform makes.

From the Service Authorization Reference (the action, its required resource types and condition
keys) and the API references' permission notes. One call may need several authorizations:
``sagemaker:CreateEndpoint`` is checked on the endpoint and on the endpoint config,
``CreateTrainingJob`` also needs ``iam:PassRole`` for its role and ``sagemaker:AddTags`` when
it carries tags, an S3 read of an SSE-KMS object also needs ``kms:Decrypt`` by the caller
through S3 (``kms:ViaService``). A call the table does not know raises ``UnmappedCall``: the
twin never lets a call through unevaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from finetune.local.iam.policy import AccessRequest

__all__ = ["Env", "UnmappedCallError", "authorizations", "s3_object_requests"]


class UnmappedCallError(KeyError):
    """The twin does not know which authorizations this call needs."""


class Env(Protocol):
    @property
    def account(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def partition(self) -> str: ...

    def bucket_key(self, bucket: str) -> str | None:
        """The KMS key ARN a bucket encrypts new objects with (SSE-KMS default), if any."""

    def next_model_package_version(self, group: str) -> int:
        """The version a CreateModelPackage into ``group`` gets."""

    def topic_key(self, topic_arn: str) -> str | None:
        """The KMS key an SNS topic encrypts messages with (server-side encryption), if any."""


def authorizations(
    env: Env, service: str, operation: str, params: dict[str, Any]
) -> list[AccessRequest]:
    handler = _SERVICES.get(service)
    if handler is None:
        raise UnmappedCallError(f"{service}:{operation}")
    return handler(env, operation, params)


# -- S3 --------------------------------------------------------------------------------------


def s3_object_requests(
    env: Env, action: str, bucket: str, key: str, *, kms: str | None = None, **context: Any
) -> list[AccessRequest]:
    """An object action, with the KMS request S3 makes with the caller's credentials when the
    bucket encrypts with a KMS key (``kms`` is ``Decrypt`` for reads, ``GenerateDataKey`` for
    writes)."""
    arn = f"arn:{env.partition}:s3:::{bucket}/{key}"
    requests = [AccessRequest(action, arn, context)]
    key_arn = env.bucket_key(bucket)
    if kms is not None and key_arn is not None:
        requests.append(
            AccessRequest(
                f"kms:{kms}",
                key_arn,
                {
                    "kms:ViaService": f"s3.{env.region}.amazonaws.com",
                    "kms:CallerAccount": env.account,
                    "kms:EncryptionContext:aws:s3:arn": arn,
                },
            )
        )
    return requests


def _s3(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    bucket = p.get("Bucket", "")
    bucket_arn = f"arn:{env.partition}:s3:::{bucket}"
    tls = {"s3:TlsVersion": "1.3"}
    if operation in ("GetObject", "HeadObject"):
        action = "s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject"
        return s3_object_requests(env, action, bucket, p["Key"], kms="Decrypt", **tls)
    if operation in ("PutObject", "CreateMultipartUpload"):
        return s3_object_requests(
            env, "s3:PutObject", bucket, p["Key"], kms="GenerateDataKey", **tls
        )
    if operation in ("UploadPart", "CompleteMultipartUpload"):
        return s3_object_requests(env, "s3:PutObject", bucket, p["Key"], kms="Decrypt", **tls)
    if operation == "AbortMultipartUpload":
        return s3_object_requests(env, "s3:AbortMultipartUpload", bucket, p["Key"], **tls)
    if operation == "DeleteObject":
        action = "s3:DeleteObjectVersion" if p.get("VersionId") else "s3:DeleteObject"
        return s3_object_requests(env, action, bucket, p["Key"], **tls)
    if operation in ("ListObjectsV2", "ListObjects"):
        return [
            AccessRequest("s3:ListBucket", bucket_arn, {**tls, "s3:prefix": p.get("Prefix", "")})
        ]
    if operation == "ListObjectVersions":
        context = {**tls, "s3:prefix": p.get("Prefix", "")}
        return [AccessRequest("s3:ListBucketVersions", bucket_arn, context)]
    if operation in ("PutObjectRetention", "PutObjectLegalHold"):
        return s3_object_requests(env, f"s3:{operation}", bucket, p["Key"], **tls)
    if operation == "GetBucketLocation":
        return [AccessRequest("s3:GetBucketLocation", bucket_arn, tls)]
    raise UnmappedCallError(f"s3:{operation}")


# -- SageMaker -------------------------------------------------------------------------------


def _sm(env: Env, kind: str, name: str) -> str:
    return f"arn:{env.partition}:sagemaker:{env.region}:{env.account}:{kind}/{name}"


def _tag_on_create(
    env: Env, operation: str, arn: str, params: dict[str, Any]
) -> list[AccessRequest]:
    """SageMaker checks sagemaker:AddTags on the new resource when a Create* carries tags."""
    if not params.get("Tags"):
        return []
    keys = [tag["Key"] for tag in params["Tags"]]
    return [
        AccessRequest(
            "sagemaker:AddTags", arn, {"sagemaker:TaggingAction": operation, "aws:TagKeys": keys}
        )
    ]


def _pass_role(env: Env, role_arn: str | None, service: str) -> list[AccessRequest]:
    if not role_arn:
        return []
    return [AccessRequest("iam:PassRole", role_arn, {"iam:PassedToService": service})]


#: Create operations: (resource type, name parameter, role parameter).
_SAGEMAKER_CREATES = {
    "CreateTrainingJob": ("training-job", "TrainingJobName", "RoleArn"),
    "CreateModel": ("model", "ModelName", "ExecutionRoleArn"),
    "CreateEndpointConfig": ("endpoint-config", "EndpointConfigName", "ExecutionRoleArn"),
    "CreateExperiment": ("experiment", "ExperimentName", None),
    "CreateTrialComponent": ("experiment-trial-component", "TrialComponentName", None),
}
#: Operations on one named resource: (resource type, name parameter).
_SAGEMAKER_ONE = {
    "DescribeTrainingJob": ("training-job", "TrainingJobName"),
    "StopTrainingJob": ("training-job", "TrainingJobName"),
    "DeleteTrainingJob": ("training-job", "TrainingJobName"),
    "DescribeModel": ("model", "ModelName"),
    "DeleteModel": ("model", "ModelName"),
    "DescribeEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "DeleteEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "DescribeEndpoint": ("endpoint", "EndpointName"),
    "DeleteEndpoint": ("endpoint", "EndpointName"),
    "DescribeExperiment": ("experiment", "ExperimentName"),
    "DescribeTrial": ("experiment-trial", "TrialName"),
    "DescribeTrialComponent": ("experiment-trial-component", "TrialComponentName"),
    "UpdateTrialComponent": ("experiment-trial-component", "TrialComponentName"),
    "DescribeModelPackageGroup": ("model-package-group", "ModelPackageGroupName"),
    "DescribeMlflowApp": ("mlflow-app", "Arn"),
    "CreatePresignedMlflowAppUrl": ("mlflow-app", "Arn"),
}


def _sagemaker(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    action = f"sagemaker:{operation}"
    if (operation.startswith("List") and operation != "ListTags") or operation == "Search":
        return [AccessRequest(action, "*")]
    if operation in _SAGEMAKER_CREATES:
        kind, name_field, role_field = _SAGEMAKER_CREATES[operation]
        arn = _sm(env, kind, p[name_field])
        context: dict[str, Any] = {}
        if operation == "CreateTrainingJob":
            context["sagemaker:InstanceTypes"] = [p["ResourceConfig"]["InstanceType"]]
        return [
            AccessRequest(action, arn, context),
            *_tag_on_create(env, operation, arn, p),
            *_pass_role(env, p.get(role_field) if role_field else None, "sagemaker.amazonaws.com"),
        ]
    if operation in _SAGEMAKER_ONE:
        kind, name_field = _SAGEMAKER_ONE[operation]
        name = p[name_field]
        arn = name if name.startswith("arn:") else _sm(env, kind, name)
        return [AccessRequest(action, arn)]
    if operation in ("CreateEndpoint", "UpdateEndpoint"):
        endpoint = _sm(env, "endpoint", p["EndpointName"])
        config = _sm(env, "endpoint-config", p["EndpointConfigName"])
        return [
            AccessRequest(action, endpoint),
            AccessRequest(action, config),
            *(_tag_on_create(env, operation, endpoint, p) if operation == "CreateEndpoint" else []),
        ]
    if operation == "CreateTrial":
        trial = _sm(env, "experiment-trial", p["TrialName"])
        return [
            AccessRequest(action, trial),
            AccessRequest(action, _sm(env, "experiment", p["ExperimentName"])),
            *_tag_on_create(env, operation, trial, p),
        ]
    if operation == "AssociateTrialComponent":
        return [
            AccessRequest(action, _sm(env, "experiment-trial-component", p["TrialComponentName"])),
            AccessRequest(action, _sm(env, "experiment-trial", p["TrialName"])),
        ]
    if operation == "CreateModelPackage":
        group = p["ModelPackageGroupName"]
        version = env.next_model_package_version(group)
        arn = _sm(env, "model-package", f"{group}/{version}")
        context = {}
        if p.get("ModelApprovalStatus"):
            context["sagemaker:ModelApprovalStatus"] = p["ModelApprovalStatus"]
        return [AccessRequest(action, arn, context), *_tag_on_create(env, operation, arn, p)]
    if operation in ("DescribeModelPackage", "UpdateModelPackage"):
        name = p.get("ModelPackageName") or p["ModelPackageArn"]
        arn = name if name.startswith("arn:") else _sm(env, "model-package", name)
        context = {}
        if operation == "UpdateModelPackage":
            if p.get("ModelApprovalStatus"):
                context["sagemaker:ModelApprovalStatus"] = p["ModelApprovalStatus"]
            for key, value in (p.get("CustomerMetadataProperties") or {}).items():
                context[f"sagemaker:CustomerMetadataProperties/{key}"] = value
            if p.get("CustomerMetadataPropertiesToRemove"):
                context["sagemaker:CustomerMetadataPropertiesToRemove"] = list(
                    p["CustomerMetadataPropertiesToRemove"]
                )
        return [AccessRequest(action, arn, context)]
    if operation in ("AddTags", "ListTags"):
        return [AccessRequest(action, p["ResourceArn"])]
    raise UnmappedCallError(f"sagemaker:{operation}")


def _sagemaker_runtime(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    if operation == "InvokeEndpoint":
        return [AccessRequest("sagemaker:InvokeEndpoint", _sm(env, "endpoint", p["EndpointName"]))]
    raise UnmappedCallError(f"sagemaker-runtime:{operation}")


# -- Other services --------------------------------------------------------------------------


def _states(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    action = f"states:{operation}"
    if operation in ("StartExecution", "ListExecutions", "DescribeStateMachine"):
        return [AccessRequest(action, p["stateMachineArn"])]
    if operation in (
        "DescribeExecution",
        "GetExecutionHistory",
        "StopExecution",
        "RedriveExecution",
    ):
        return [AccessRequest(action, p["executionArn"])]
    if operation == "ListStateMachines":
        return [AccessRequest(action, "*")]
    raise UnmappedCallError(f"stepfunctions:{operation}")


def _lambda(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    name = p["FunctionName"]
    arn = (
        name
        if name.startswith("arn:")
        else (f"arn:{env.partition}:lambda:{env.region}:{env.account}:function:{name}")
    )
    if p.get("Qualifier"):
        arn = f"{arn}:{p['Qualifier']}"
    action = {"Invoke": "lambda:InvokeFunction"}.get(operation, f"lambda:{operation}")
    if operation not in ("Invoke", "GetFunctionConfiguration", "GetFunction"):
        raise UnmappedCallError(f"lambda:{operation}")
    return [AccessRequest(action, arn)]


def _ecr(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    if operation == "GetAuthorizationToken":
        return [AccessRequest("ecr:GetAuthorizationToken", "*")]
    account = p.get("registryId") or env.account
    arn = f"arn:{env.partition}:ecr:{env.region}:{account}:repository/{p['repositoryName']}"
    return [AccessRequest(f"ecr:{operation}", arn)]


def _sns(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    if operation == "Publish":
        publish = [AccessRequest("sns:Publish", p["TopicArn"])]
        key_arn = env.topic_key(p["TopicArn"])
        if key_arn is None:
            return publish
        # SNS developer guide (encrypted topics): the publisher needs kms:GenerateDataKey* and
        # kms:Decrypt on the topic's key, which SNS calls with the publisher's credentials.
        via_sns = {
            "kms:ViaService": f"sns.{env.region}.amazonaws.com",
            "kms:CallerAccount": env.account,
        }
        return [
            *publish,
            AccessRequest("kms:GenerateDataKey", key_arn, via_sns),
            AccessRequest("kms:Decrypt", key_arn, via_sns),
        ]
    raise UnmappedCallError(f"sns:{operation}")


def _cloudformation(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    if operation == "DescribeStacks":
        name = p.get("StackName")
        arn = (
            f"arn:{env.partition}:cloudformation:{env.region}:{env.account}:stack/{name}/*"
            if name
            else "*"
        )
        return [AccessRequest("cloudformation:DescribeStacks", arn)]
    raise UnmappedCallError(f"cloudformation:{operation}")


def _logs(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    group = p.get("logGroupName", "")
    base = f"arn:{env.partition}:logs:{env.region}:{env.account}:log-group:{group}"
    stream = p.get("logStreamName")
    # Group-level actions are authorized against log-group:NAME:log-stream: (empty stream).
    arn = f"{base}:log-stream:{stream}" if stream else f"{base}:log-stream:"
    return [AccessRequest(f"logs:{operation}", arn)]


def _mlflow_app(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    """MLflow REST calls to a SageMaker AI MLflow App (``Arn``: the App): every call is
    authorized with sagemaker:CallMlflowAppApi on the App (SageMaker AI developer guide, MLflow
    App IAM permissions). Operations are MLflow's (GetRun, LogBatch, ...)."""
    return [AccessRequest("sagemaker:CallMlflowAppApi", p["Arn"])]


def _bedrock_runtime(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    """Converse (and ConverseStream) are authorized as bedrock:InvokeModel
    (InvokeModelWithResponseStream) on the model: a foundation model id names
    ``arn:...:bedrock:<region>::foundation-model/<id>``; an ARN is the resource itself."""
    actions = {
        "Converse": "bedrock:InvokeModel",
        "InvokeModel": "bedrock:InvokeModel",
        "ConverseStream": "bedrock:InvokeModelWithResponseStream",
        "InvokeModelWithResponseStream": "bedrock:InvokeModelWithResponseStream",
    }
    if operation not in actions:
        raise UnmappedCallError(f"bedrock-runtime:{operation}")
    model = p["modelId"]
    arn = (
        model
        if model.startswith("arn:")
        else f"arn:{env.partition}:bedrock:{env.region}::foundation-model/{model}"
    )
    return [AccessRequest(actions[operation], arn)]


def _sts(env: Env, operation: str, p: dict[str, Any]) -> list[AccessRequest]:
    if operation == "GetCallerIdentity":
        return []  # needs no permission
    raise UnmappedCallError(f"sts:{operation}")


_SERVICES: dict[str, Callable[[Env, str, dict[str, Any]], list[AccessRequest]]] = {
    "s3": _s3,
    "sagemaker": _sagemaker,
    "sagemaker-runtime": _sagemaker_runtime,
    "stepfunctions": _states,
    "lambda": _lambda,
    "ecr": _ecr,
    "sns": _sns,
    "cloudformation": _cloudformation,
    "logs": _logs,
    "sts": _sts,
    "mlflow-app": _mlflow_app,
    "bedrock-runtime": _bedrock_runtime,
}
