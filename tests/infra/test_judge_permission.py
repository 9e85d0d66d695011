"""The Bedrock judge, least privilege: the platform's configuration lists the judge models; the
launch function refuses any other (tests/lambdas), the training role may invoke exactly those,
and a VPC without egress reaches bedrock-runtime through an interface endpoint.

``prod`` (the example without egress) configures one judge; ``dev`` none.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from finetune.local.call_hook import ApiCall
from finetune.local.cfn import Intrinsics
from finetune.local.iam.twin import IamTwin
from stacks.config import ENVIRONMENTS, ConfigError, load_config
from tests.infra.synth import Synthesized

PROD = load_config("prod")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (("anthropic claude",), r"judge_model_ids: 'anthropic claude' is invalid: expected a "),
        (
            ("arn:aws:bedrock:eu-west-1::foundation-model/amazon.nova-micro-v1:0",),
            r"judge_model_ids: 'arn:aws:bedrock.* is invalid: expected a Bedrock foundation",
        ),
        (
            ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0",),
            r"judge_model_ids: 'eu\.anthropic.* is invalid: expected .*not a cross-Region "
            r"inference profile",
        ),
        (
            ("global.amazon.nova-2-lite-v1:0",),
            r"judge_model_ids: 'global\..* not a cross-Region inference profile",
        ),
        (
            ("amazon.nova-micro-v1:0", "amazon.nova-micro-v1:0"),
            r"judge_model_ids: .* is invalid: expected unique ids",
        ),
        ("amazon.nova-micro-v1:0", r"judge_model_ids: 'amazon.nova-micro-v1:0' is invalid"),
    ],
)
def test_judge_model_ids_are_validated_naming_the_key(ids: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"env 'dev': {message}"):
        dataclasses.replace(ENVIRONMENTS["dev"], judge_model_ids=ids)


def test_no_environment_allows_a_judge_unless_configured() -> None:
    assert load_config("dev").judge_model_ids == ()
    assert load_config("local").judge_model_ids == ()  # no Bedrock on the local backend
    assert len(PROD.judge_model_ids) == 1


def test_the_allowed_judges_travel_in_the_launch_functions_settings() -> None:
    from tests.lambdas.conftest import make_settings

    settings = make_settings(judge_model_ids=PROD.judge_model_ids)
    environment = settings.to_env()
    assert json.loads(environment["FT_JUDGE_MODEL_IDS"]) == list(PROD.judge_model_ids)
    assert type(settings).from_env(environment) == settings
    # a function deployed before the setting existed allows no judge
    del environment["FT_JUDGE_MODEL_IDS"]
    assert type(settings).from_env(environment).judge_model_ids == ()


def training_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    template = synthesized.template("Workflow")
    return [
        statement
        for name, policy in template.find_resources("AWS::IAM::ManagedPolicy").items()
        if name.startswith("TrainingJobRole")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_the_training_role_may_invoke_exactly_the_configured_judges(
    dev: Synthesized, prod: Synthesized
) -> None:
    (invoke,) = [s for s in training_statements(prod) if "bedrock" in json.dumps(s["Action"])]
    assert invoke["Action"] == "bedrock:InvokeModel"
    assert "Condition" not in invoke
    resources = invoke["Resource"] if isinstance(invoke["Resource"], list) else [invoke["Resource"]]
    # prod names its region, so CDK writes the partition too
    assert resources == [
        f"arn:aws:bedrock:{PROD.region}::foundation-model/{model_id}"
        for model_id in PROD.judge_model_ids
    ]
    # no other principal of the platform may call Bedrock; dev allows no judge
    assert json.dumps(prod.templates).count('"bedrock:') == 1
    assert '"bedrock:' not in json.dumps(dev.templates)


def test_the_launch_function_is_told_the_allowed_judges(
    dev: Synthesized, prod: Synthesized
) -> None:
    for synthesized, expected in ((dev, []), (prod, list(PROD.judge_model_ids))):
        functions = synthesized.template("Workflow").find_resources(
            "AWS::Lambda::Function", {"Properties": {"Handler": "launch_run.handler.handler"}}
        )
        (launch,) = functions.values()
        variables = launch["Properties"]["Environment"]["Variables"]
        assert json.loads(variables["FT_JUDGE_MODEL_IDS"]) == expected


def test_without_egress_the_judge_is_reached_through_a_bedrock_runtime_endpoint(
    dev: Synthesized, prod: Synthesized
) -> None:
    def bedrock_endpoints(synthesized: Synthesized) -> list[dict[str, Any]]:
        endpoints = synthesized.template("Network").find_resources("AWS::EC2::VPCEndpoint")
        return [
            e["Properties"]
            for e in endpoints.values()
            if "bedrock-runtime" in json.dumps(e["Properties"]["ServiceName"])
        ]

    assert bedrock_endpoints(dev) == []
    (endpoint,) = bedrock_endpoints(prod)
    assert endpoint["VpcEndpointType"] == "Interface"
    assert endpoint["PrivateDnsEnabled"] is True
    assert endpoint["SubnetIds"] == list(PROD.existing_vpc.private_subnet_ids)  # type: ignore[union-attr]


# -- the IAM twin on the synthesized prod templates ------------------------------------------


class _Placeholder(dict[tuple[str, ...], str]):
    """Physical ids and attributes of a platform that is not emulated: a name per resource."""

    def __missing__(self, key: tuple[str, ...]) -> str:
        stack, logical_id = key[0], key[1]
        if key[2:] == ("Arn",) and logical_id.startswith("TrainingJobRole"):
            return f"arn:aws:iam::{PROD.account}:role/{logical_id}"
        return f"{stack}-{logical_id}" + "".join(f".{part}" for part in key[2:])


def prod_twin(prod: Synthesized) -> tuple[IamTwin, str]:
    placeholders = _Placeholder()
    intrinsics = Intrinsics(
        prod.templates,
        physical=placeholders,  # type: ignore[arg-type]
        attribute=placeholders,  # type: ignore[arg-type]
        attribute_fallback=lambda *key: placeholders[key],
    )
    twin = IamTwin()
    twin.load(intrinsics)
    twin.policies.account = PROD.account or ""
    twin.policies.region = PROD.region or ""
    (role,) = [arn for arn in twin.policies.roles if "/TrainingJobRole" in arn]
    return twin, role


def converse(twin: IamTwin, model_id: str) -> None:
    client = boto3.client("bedrock-runtime", region_name=PROD.region)
    params = {"modelId": model_id, "messages": [{"role": "user", "content": [{"text": "2+2?"}]}]}
    twin.check(ApiCall(client, "bedrock-runtime", "Converse", params, PROD.region or ""))


def test_the_twin_lets_the_training_role_call_only_a_configured_judge(prod: Synthesized) -> None:
    twin, training_role = prod_twin(prod)
    (allowed,) = PROD.judge_model_ids
    with twin.acting_as(training_role):
        converse(twin, allowed)  # evaluated and allowed: no error
        for other in ("amazon.nova-pro-v1:0", f"us.{allowed}"):
            with pytest.raises(ClientError) as refused:
                converse(twin, other)
            assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
            assert "bedrock:InvokeModel" in str(refused.value)
    assert twin.evaluated[(training_role, "bedrock:InvokeModel")] == 3
    assert [d.resource.rsplit("/", 1)[-1] for d in twin.denials] == [
        "amazon.nova-pro-v1:0",
        f"us.{allowed}",
    ]
