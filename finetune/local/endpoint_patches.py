"""SageMaker endpoints and the model registry as SageMaker runs them: moto lacks UpdateEndpoint
and knows no GPU endpoint instance types; an *endpoint host* decides whether the model serves and
answers InvokeEndpoint (the local backend serves the model on 127.0.0.1; tests script answers).
Endpoints pass through Creating/Updating for a few DescribeEndpoint calls before their outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from finetune.local.lambda_patches import no_principals
from finetune.local.patching import Patch

if TYPE_CHECKING:
    from finetune.local.moto_patches import EndpointHost, Principals

__all__ = ["endpoint_patches", "model_registry_patches"]


@dataclass
class _Transition:
    """An endpoint in Creating/Updating: what it becomes after ``checks_left`` more
    DescribeEndpoint calls."""

    checks_left: int
    status: str
    config_name: str | None = None
    variants: Any = None


def endpoint_patches(
    host: EndpointHost | None, principals: Principals | None, transition_checks: int = 0
) -> list[Patch]:
    from moto.core.responses import ActionResult
    from moto.sagemaker import responses as sagemaker_responses
    from moto.sagemaker.models import FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    original_create = SageMakerModelBackend.create_endpoint
    original_delete = SageMakerModelBackend.delete_endpoint
    original_describe = SageMakerModelBackend.describe_endpoint
    acting_as = principals.acting_as if principals is not None else no_principals
    transitions: dict[str, _Transition] = {}

    def settle_later(endpoint: Any, transitional: str, outcome: _Transition) -> None:
        """Report ``transitional`` for the next ``transition_checks`` describes, then the
        outcome (SageMaker takes minutes; the workflow must wait, and may not act meanwhile)."""
        if transition_checks <= 0:
            apply(endpoint, outcome)
            return
        outcome.checks_left = transition_checks
        transitions[endpoint.endpoint_name] = outcome
        endpoint.endpoint_status = transitional

    def apply(endpoint: Any, outcome: _Transition) -> None:
        endpoint.endpoint_status = outcome.status
        if outcome.config_name is not None:
            endpoint.endpoint_config_name = outcome.config_name
            endpoint.production_variants = outcome.variants

    def describe_endpoint(self: Any, endpoint_name: str) -> Any:
        pending = transitions.get(endpoint_name)
        if pending is not None and endpoint_name in self.endpoints:
            if pending.checks_left > 0:
                pending.checks_left -= 1
            else:
                apply(self.endpoints[endpoint_name], transitions.pop(endpoint_name))
        return original_describe(self, endpoint_name)

    def validate_instance_type(self: Any, instance_type: str) -> None:
        # moto's list predates the GPU families the platform serves on; sagemaker_rules checks
        # instance types against the platform's catalog.
        if not instance_type.startswith("ml."):
            raise ValueError(f"invalid instance type {instance_type!r}")

    def serve(backend: Any, endpoint_name: str, endpoint_config_name: str) -> str:
        config = backend.describe_endpoint_config(endpoint_config_name)
        if host is None:
            return "InService"
        found = backend.describe_model(config["ProductionVariants"][0]["ModelName"])
        model = {
            "ModelName": found.model_name,
            "ExecutionRoleArn": found.execution_role_arn,
            "PrimaryContainer": found.primary_container,
        }
        refused = (
            principals.on_endpoint(model, {**config, "EndpointName": endpoint_name})
            if principals is not None
            else []
        )
        if refused:
            return "Failed"  # the container cannot start: the endpoint fails, as on AWS
        with acting_as(model["ExecutionRoleArn"]):
            return host.deploy(endpoint_name, config, model)

    def create_endpoint(
        self: Any, endpoint_name: str, endpoint_config_name: str, tags: list[dict[str, str]]
    ) -> Any:
        endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
        status = serve(self, endpoint_name, endpoint_config_name)
        settle_later(endpoint, "Creating", _Transition(0, status))
        return endpoint

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> Any:
        endpoint = self.endpoints[endpoint_name]
        config = self.describe_endpoint_config(endpoint_config_name)
        status = serve(self, endpoint_name, endpoint_config_name)
        if status == "InService":
            variants = endpoint._process_production_variants(config["ProductionVariants"])
            outcome = _Transition(0, status, endpoint_config_name, variants)
        elif status == "Failed":
            # A failed update rolls back: the endpoint keeps serving its previous config.
            outcome = _Transition(0, "InService")
        else:
            outcome = _Transition(0, status)
        settle_later(endpoint, "Updating", outcome)
        return endpoint

    def delete_endpoint(self: Any, endpoint_name: str) -> None:
        original_delete(self, endpoint_name)
        transitions.pop(endpoint_name, None)
        if host is not None:
            host.delete(endpoint_name)

    def update_endpoint_response(self: Any) -> Any:
        endpoint = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    def invoke_endpoint(self: Any) -> Any:
        # moto's backend method never sees the request body; answer at the response layer.
        endpoint_name = unquote(self.path.split("/")[2])
        body = self.body if isinstance(self.body, bytes) else str(self.body).encode()
        if host is None:
            answer = json.dumps([{"generated_text": "hello"}]).encode()
        else:
            answer = host.invoke(endpoint_name, body, self.headers.get("Content-Type", ""))
        return 200, {"Content-Type": "application/json"}, answer

    return [
        Patch(
            FakeEndpointConfig,
            "validate_instance_type",
            validate_instance_type,
            "endpoint configs accept the GPU instance families SageMaker serves on",
        ),
        Patch(
            SageMakerModelBackend,
            "create_endpoint",
            create_endpoint,
            "CreateEndpoint brings the config's model up with the model's role",
        ),
        Patch(
            SageMakerModelBackend,
            "update_endpoint",
            update_endpoint,
            "UpdateEndpoint switches to the new config once it serves; a failed update rolls "
            "back to the previous config (or ends UpdateRollbackFailed)",
        ),
        Patch(
            SageMakerModelBackend,
            "delete_endpoint",
            delete_endpoint,
            "DeleteEndpoint stops serving",
        ),
        Patch(
            SageMakerModelBackend,
            "describe_endpoint",
            describe_endpoint,
            "an endpoint reports Creating/Updating for a while before its outcome (SageMaker "
            "refuses DeleteEndpoint and UpdateEndpoint meanwhile: sagemaker_rules)",
        ),
        Patch(
            sagemaker_responses.SageMakerResponse,
            "update_endpoint",
            update_endpoint_response,
            "UpdateEndpoint exists",
        ),
        Patch(
            SageMakerRuntimeResponse,
            "invoke_endpoint",
            invoke_endpoint,
            "InvokeEndpoint reaches the model the endpoint serves",
        ),
    ]


def model_registry_patches() -> list[Patch]:
    from moto.sagemaker.models import SageMakerModelBackend

    original_update = SageMakerModelBackend.update_model_package

    def update_model_package(
        self: Any,
        model_package_arn: str,
        model_approval_status: str | None,
        approval_description: str | None,
        customer_metadata_properties: dict[str, str] | None,
        customer_metadata_properties_to_remove: list[str],
        additional_inference_specifications_to_add: list[Any] | None,
    ) -> str:
        package = self.model_packages.get(
            self.model_package_name_mapping.get(model_package_arn, model_package_arn)
        )
        kept = dict(package.customer_metadata_properties or {}) if package is not None else {}
        if package is not None:  # what the request leaves out stays as it was
            model_approval_status = model_approval_status or package.model_approval_status
            approval_description = approval_description or package.approval_description
        arn = original_update(
            self,
            model_package_arn,
            model_approval_status,
            approval_description,
            {**kept, **(customer_metadata_properties or {})},
            customer_metadata_properties_to_remove,
            additional_inference_specifications_to_add,
        )
        return str(arn)

    def update_model_package_response(self: Any) -> Any:
        from moto.core.responses import ActionResult

        arn = self._get_param("ModelPackageArn")
        specification = self._get_param("InferenceSpecification")
        updated = self.sagemaker_backend.update_model_package(
            model_package_arn=arn,
            model_approval_status=self._get_param("ModelApprovalStatus"),
            approval_description=self._get_param("ApprovalDescription"),
            customer_metadata_properties=self._get_param("CustomerMetadataProperties"),
            customer_metadata_properties_to_remove=self._get_param(
                "CustomerMetadataPropertiesToRemove", []
            ),
            additional_inference_specifications_to_add=self._get_param(
                "AdditionalInferenceSpecificationsToAdd"
            ),
        )
        if specification is not None:
            backend = self.sagemaker_backend
            name = backend.model_package_name_mapping.get(updated, updated)
            backend.model_packages[name].inference_specification = specification
        return ActionResult({"ModelPackageArn": updated})

    from moto.sagemaker import responses as sagemaker_responses

    return [
        Patch(
            SageMakerModelBackend,
            "update_model_package",
            update_model_package,
            "UpdateModelPackage changes only what the request gives: CustomerMetadataProperties "
            "are added to the package's, the approval status stays unless given (moto replaced "
            "both, dropping them on a partial update)",
        ),
        Patch(
            sagemaker_responses.SageMakerResponse,
            "update_model_package",
            update_model_package_response,
            "UpdateModelPackage applies an InferenceSpecification (an approver can repoint a "
            "package)",
        ),
    ]
