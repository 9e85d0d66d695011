"""Launch logic against moto: platform rules, version pinning, image digest, idempotent start."""

from __future__ import annotations

import json
from typing import Any

import pytest

from launch_run.logic import resolve_run, start_run
from llm_sft.hyperparameters import HYPERPARAMETER_NAMES, parse_hyperparameters
from runspec.attempts import attempt_job_name
from runspec.request import Hyperparameters, RunRequestError, parse_run_request
from tests.lambdas.conftest import CHAT_ROW, Aws, make_settings


def resolve(
    aws: Aws, request: dict[str, Any], execution_name: str | None = None, **settings: Any
) -> dict[str, Any]:
    return resolve_run(
        request,
        make_settings(**settings) if settings else aws.settings,
        execution_name=execution_name,
        s3=aws.client("s3"),
        ecr=aws.client("ecr"),
    ).to_state()


def problems(aws: Aws, request: dict[str, Any], **settings: Any) -> str:
    with pytest.raises(RunRequestError) as raised:
        resolve(aws, request, **settings)
    return "; ".join(raised.value.problems)


def test_empty_request_resolves_to_documented_defaults(aws: Aws) -> None:
    run = resolve(aws, {})

    assert run["run_id"].startswith("default-")
    assert run["training_job_name"] == f"llmft-test-{run['run_id']}"
    # Attempt 1 of the run; capacity failures are retried twice, after 15 and 30 minutes.
    assert run["attempt"] == {
        "number": 1,
        "training_job_name": f"llmft-test-{run['run_id']}-a1",
        "stem": f"llmft-test-{run['run_id']}",
        "capacity_retries": 0,
        "backoff_seconds": 0,
    }
    assert run["training"]["capacity_retry"] == {"max_retries": 2, "backoff_seconds": [900, 1800]}
    training = run["training"]
    assert training["instance_type"] == "ml.g5.2xlarge"
    assert training["spot"] is True
    assert training["stopping_condition"] == {
        "MaxRuntimeInSeconds": 86400,
        "MaxWaitTimeInSeconds": 172800,
    }
    assert training["hyperparameters"] == {"model_id": "Qwen/Qwen2.5-0.5B-Instruct"}
    # The default location has no validation.jsonl: training splits one off instead.
    assert [c["ChannelName"] for c in training["input_data_config"]] == ["train"]
    assert run["deployment"]["enabled"] is False
    assert run["registration"]["approval_status"] == "PendingManualApproval"


def test_dataset_versions_and_etags_are_pinned(aws: Aws) -> None:
    uri = aws.put_jsonl("data/train.jsonl", [CHAT_ROW])
    first = aws.put("data/train.jsonl", json.dumps(CHAT_ROW) + "\n" + json.dumps(CHAT_ROW) + "\n")

    run = resolve(aws, {"dataset": {"train": uri}})

    (pinned,) = run["datasets"]["train"]["objects"]
    assert pinned["version_id"] == first["VersionId"]
    assert pinned["etag"] == first["ETag"].strip('"')
    identity = json.loads(run["training"]["dataset_identity"])
    assert identity["train"]["version_id"] == first["VersionId"]
    assert identity["train"]["objects"] == 1


def test_a_prefix_pins_every_object_under_it(aws: Aws) -> None:
    aws.put_jsonl("shards/a.jsonl", [CHAT_ROW])
    aws.put_jsonl("shards/b.jsonl", [CHAT_ROW])

    run = resolve(aws, {"dataset": {"train": "s3://llmft-test-datasets/shards/"}})

    keys = sorted(obj["key"] for obj in run["datasets"]["train"]["objects"])
    assert keys == ["shards/a.jsonl", "shards/b.jsonl"]
    assert run["training"]["input_data_config"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://llmft-test-datasets/shards/"
    )


def test_custom_image_is_pinned_by_digest(aws: Aws) -> None:
    run = resolve(aws, {})
    assert run["image"]["digest"].startswith("sha256:")
    assert run["training"]["image_uri"].endswith("@" + run["image"]["digest"])


def test_script_mode_runs_the_source_bundle_in_the_huggingface_image(aws: Aws) -> None:
    run = resolve(aws, {"training": {"option": "script-mode"}})
    assert "huggingface-pytorch-training" in run["training"]["image_uri"]
    hyperparameters = run["training"]["hyperparameters"]
    assert hyperparameters["sagemaker_program"] == "train.py"
    assert hyperparameters["sagemaker_submit_directory"] == "s3://cdk-assets/abc.tar.gz"


def test_s3_base_model_becomes_the_model_channel(aws: Aws) -> None:
    run = resolve(
        aws,
        {"base_model": "s3://llmft-test-datasets/models/llama-3.2-1b/"},
    )
    channels = {c["ChannelName"]: c for c in run["training"]["input_data_config"]}
    assert channels["model"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://llmft-test-datasets/models/llama-3.2-1b/"
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"training": {"instance_type": "ml.p5.48xlarge"}},
            "training.instance_type: 'ml.p5.48xlarge' is not allowed",
        ),
        (
            {
                "base_model": "meta-llama/Llama-3.1-70B",
                "training": {"instance_type": "ml.g5.2xlarge"},
            },
            "training.instance_type: 'ml.g5.2xlarge' has 1×24 GiB GPU",
        ),
        (
            {"dataset": {"train": "s3://someone-elses-bucket/train.jsonl"}},
            "dataset.train: 's3://someone-elses-bucket/train.jsonl' is outside",
        ),
        (
            {"dataset": {"train": "s3://llmft-test-datasets/missing.jsonl"}},
            "dataset.train: 's3://llmft-test-datasets/missing.jsonl' does not exist",
        ),
        ({"dataset": {"train": "s3://llmft-test-datasets/nothing/"}}, "holds no objects"),
        (
            {"deployment": {"enabled": True, "instance_type": "ml.m5.xlarge"}},
            "deployment.instance_type: 'ml.m5.xlarge' has no NVIDIA GPU",
        ),
        ({"base_model": "my-org/custom-model"}, "model_parameters_billions:"),
        (
            {"training": {"instance_count": 2}},
            "training.instance_count: 2 instances are more than this platform allows for one "
            "job (1; max_training_instances",
        ),
        (
            {"hyperparameters": {"merge_adapter": False}, "deployment": {"enabled": True}},
            "hyperparameters.merge_adapter: false writes only the LoRA adapter",
        ),
        (
            {"hyperparameters": {"trust_remote_code": True}},
            "hyperparameters.trust_remote_code: this platform does not run code shipped",
        ),
        (
            {
                "base_model": "meta-llama/Llama-3.1-70B",
                "deployment": {"enabled": True, "instance_type": "ml.g5.12xlarge"},
            },
            "deployment.instance_type: ml.g5.12xlarge has 4x22.5 GiB usable; a 70.5B model "
            "needs 131.4 GiB",
        ),
    ],
)
def test_platform_rules_name_the_field(aws: Aws, request_: dict[str, Any], message: str) -> None:
    assert message in problems(aws, request_)


def test_trust_remote_code_needs_the_platform_to_allow_it(aws: Aws) -> None:
    run = resolve(
        aws, {"hyperparameters": {"trust_remote_code": True}}, allow_trust_remote_code=True
    )
    assert run["training"]["hyperparameters"]["trust_remote_code"] == "True"


def test_the_volume_key_is_set_only_for_ebs_instance_types(aws: Aws) -> None:
    """SageMaker refuses VolumeKmsKeyId for instance types with NVMe storage (every GPU type
    the platform trains on); EBS-backed types get the platform key."""
    allowed = ("ml.g5.2xlarge", "ml.m5.xlarge")
    nvme = resolve(aws, {}, kms_key_arn="arn:aws:kms:k", allowed_training_instance_types=allowed)
    assert nvme["training"]["resource_config"] == {
        "InstanceType": "ml.g5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 200,
    }
    ebs_request = {"training": {"instance_type": "ml.m5.xlarge"}, "model_parameters_billions": 0.01}
    settings = {"kms_key_arn": "arn:aws:kms:k", "allowed_training_instance_types": allowed}
    found = problems(aws, ebs_request, **settings)  # a CPU type cannot train: refused anyway
    assert "has no NVIDIA GPU" in found or "training.instance_type" in found


def test_serving_limits_follow_the_model_and_the_instance(aws: Aws) -> None:
    small = resolve(aws, {"deployment": {"enabled": True, "instance_type": "ml.g5.xlarge"}})
    large = resolve(
        aws,
        {
            "base_model": "meta-llama/Meta-Llama-3-8B",
            "hyperparameters": {"method": "qlora", "max_seq_length": 2048},
            "deployment": {"enabled": True, "instance_type": "ml.g5.12xlarge"},
        },
    )
    small_env = small["deployment"]["serving_environment"]
    large_env = large["deployment"]["serving_environment"]
    assert small_env["SM_NUM_GPUS"] == "1"
    assert large_env["SM_NUM_GPUS"] == "4"
    assert int(small_env["MAX_INPUT_TOKENS"]) < int(small_env["MAX_TOTAL_TOKENS"])
    assert int(large_env["MAX_TOTAL_TOKENS"]) >= 2048


def test_each_deployment_gets_names_of_its_own(aws: Aws) -> None:
    first = resolve(aws, {"run_name": "r1", "deployment": {"enabled": True}}, execution_name="r1")
    console = resolve(aws, {"run_name": "r1", "deployment": {"enabled": True}}, execution_name="x")
    names = {first["deployment"]["model_name"], console["deployment"]["model_name"]}
    assert len(names) == 2
    assert all(name.startswith("llmft-test-r1-") and len(name) <= 63 for name in names)
    assert first["deployment"]["endpoint_config_name"] == first["deployment"]["model_name"]


def test_long_names_stay_within_sagemakers_limit(aws: Aws) -> None:
    run_name = "r" + "x" * 39
    run = resolve(aws, {"run_name": run_name, "deployment": {"enabled": True}}, execution_name="e")
    assert len(run["deployment"]["model_name"]) <= 63
    assert len(run["training_job_name"]) <= 63
    # Every attempt a run can make, user retries included (runspec.attempts).
    last = attempt_job_name(run["attempt"]["stem"], 999)
    assert len(last) <= 63
    assert last.startswith(f"llmft-test-{run_name[:20]}")


def test_a_run_too_large_for_the_workflow_state_is_refused(aws: Aws) -> None:
    for index in range(900):
        aws.put(f"many/{'k' * 200}-{index:04d}.jsonl", json.dumps(CHAT_ROW) + "\n")
    found = problems(aws, {"dataset": {"train": "s3://llmft-test-datasets/many/"}})
    assert "too many objects" in found
    assert "256 KiB" in found


def test_memory_advice_names_request_fields(aws: Aws) -> None:
    found = problems(aws, {"base_model": "meta-llama/Llama-3.1-8B"})
    assert "hyperparameters.per_device_train_batch_size 1" in found
    assert "hyperparameters.method 'qlora'" in found


def test_empty_dataset_object_is_refused(aws: Aws) -> None:
    aws.put("data/empty.jsonl", b"")
    assert "dataset.train: 's3://llmft-test-datasets/data/empty.jsonl' is empty" in problems(
        aws, {"dataset": {"train": "s3://llmft-test-datasets/data/empty.jsonl"}}
    )


def test_without_egress_hub_models_and_script_mode_are_refused(aws: Aws) -> None:
    found = problems(aws, {"training": {"option": "script-mode"}}, internet_egress=False)
    assert "base_model: 'Qwen/Qwen2.5-0.5B-Instruct' is a Hugging Face Hub id" in found
    assert "training.option: 'script-mode' installs training_code/requirements.txt" in found


def test_same_request_same_run_id_console_starts_get_their_own(aws: Aws) -> None:
    request = {"experiment_name": "chat", "hyperparameters": {"lora_r": 8}}
    first = resolve(aws, request)
    assert resolve(aws, request)["run_id"] == first["run_id"]
    assert resolve(aws, request, execution_name=first["run_id"])["run_id"] == first["run_id"]
    console = resolve(aws, request, execution_name="2f6c1e0e-4b1a-4f0e-9a51-5e8c0d7f3a11")
    assert console["run_id"].startswith(first["run_id"] + "-")
    assert resolve(aws, {**request, "run_name": "mine"}, execution_name="x")["run_id"] == "mine"


def test_start_is_idempotent(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    request = {"experiment_name": "chat"}

    clients = {
        "s3": aws.client("s3"),
        "ecr": aws.client("ecr"),
        "sagemaker": aws.client("sagemaker"),
    }
    first = start_run(request, aws.settings, sfn=sfn, **clients)
    again = start_run(request, aws.settings, sfn=sfn, **clients)

    assert first["started"] is True
    assert again["execution_arn"] == first["execution_arn"]
    executions = sfn.list_executions(stateMachineArn=aws.settings.state_machine_arn)["executions"]
    assert [e["name"] for e in executions] == [first["run_id"]]
    assert json.loads(sfn.describe_execution(executionArn=first["execution_arn"])["input"]) == {
        "experiment_name": "chat"
    }


def test_reusing_a_run_name_for_another_request_is_refused(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    clients = {
        "sfn": sfn,
        "s3": aws.client("s3"),
        "ecr": aws.client("ecr"),
        "sagemaker": aws.client("sagemaker"),
    }
    start_run({"run_name": "exp-1"}, aws.settings, **clients)
    with pytest.raises(RunRequestError, match=r"run_name: run id 'exp-1' is already used"):
        start_run({"run_name": "exp-1", "hyperparameters": {"lora_r": 4}}, aws.settings, **clients)


def test_invalid_request_starts_nothing(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    with pytest.raises(RunRequestError):
        start_run(
            {"training": {"spot": "sometimes"}},
            aws.settings,
            sfn=sfn,
            s3=aws.client("s3"),
            ecr=aws.client("ecr"),
            sagemaker=aws.client("sagemaker"),
        )
    assert sfn.list_executions(stateMachineArn=aws.settings.state_machine_arn)["executions"] == []


def test_request_hyperparameters_are_the_training_contract() -> None:
    assert set(Hyperparameters.model_fields) <= set(HYPERPARAMETER_NAMES)
    request = parse_run_request(
        {
            "hyperparameters": {
                "method": "lora",
                "epochs": 2,
                "learning_rate": 0.0005,
                "lora_target_modules": ["q_proj", "v_proj"],
                "packing": False,
                "bf16": "auto",
                "gradient_checkpointing": True,
                "lr_scheduler_type": "linear",
            }
        }
    )
    strings = {"model_id": "org/model", **request.hyperparameters.as_sagemaker_strings()}
    parsed = parse_hyperparameters(strings)
    assert parsed.lora_target_modules == ("q_proj", "v_proj")
    assert parsed.packing is False
    assert parsed.gradient_checkpointing is True
    assert parsed.learning_rate == 0.0005


# -- several GPUs and instances ------------------------------------------------------------------

MULTI: dict[str, Any] = {"max_training_instances": 4}


def test_multi_instance_runs_are_accepted_up_to_the_platforms_maximum(aws: Aws) -> None:
    run = resolve(aws, {"training": {"instance_count": 4}}, **MULTI)
    training = run["training"]
    assert training["resource_config"]["InstanceCount"] == 4
    assert training["hyperparameters"]["sagemaker_torch_distributed_enabled"] == "true"
    # Spot and checkpoints as for one instance: one S3 prefix (rank 0 writes it, every instance
    # gets it back on a restart), a wait longer than the runtime.
    assert training["spot"] is True
    assert (
        training["checkpoint_s3_uri"] == f"s3://llmft-test-artifacts/checkpoints/{run['run_id']}/"
    )
    stopping = training["stopping_condition"]
    assert stopping["MaxWaitTimeInSeconds"] > stopping["MaxRuntimeInSeconds"]

    found = problems(aws, {"training": {"instance_count": 5}}, **MULTI)
    assert "training.instance_count: 5 instances are more than this platform allows" in found
    assert "(4; max_training_instances in its configuration)" in found


def test_a_multi_instance_run_that_does_not_fit_is_refused_with_the_memory_per_gpu(
    aws: Aws,
) -> None:
    found = problems(
        aws,
        {
            "base_model": "meta-llama/Llama-3.1-70B",
            "training": {"instance_count": 4},
            "hyperparameters": {"per_device_train_batch_size": 1},
        },
        **MULTI,
    )
    assert found.startswith(
        "training.instance_type: 'ml.g5.2xlarge' ×4 has 1×24 GiB GPU (A10G, 22.5 GiB usable); "
        "LoRA on a 70.5B model under fsdp needs ~"
    )
    # what would fit, in request fields: four instances of four GPUs each
    assert found.endswith("; use training.instance_type 'ml.g5.12xlarge'")
    resolve(
        aws,
        {
            "base_model": "meta-llama/Llama-3.1-70B",
            "training": {"instance_type": "ml.g5.12xlarge", "instance_count": 4},
            "hyperparameters": {"per_device_train_batch_size": 1},
        },
        **MULTI,
    )


def test_qlora_cannot_be_sharded_and_the_refusal_names_the_strategy(aws: Aws) -> None:
    found = problems(
        aws,
        {
            "base_model": "meta-llama/Meta-Llama-3-8B",
            "training": {"instance_type": "ml.g5.12xlarge"},
            "hyperparameters": {"method": "qlora", "distributed_strategy": "fsdp"},
        },
    )
    assert found.startswith("hyperparameters.distributed_strategy: 'ml.g5.12xlarge' has 4×24")
    assert "distributed_strategy=fsdp does not compose with method=qlora" in found
    assert "use hyperparameters.method 'lora'" in found


@pytest.mark.parametrize(
    ("training", "distributed"),
    [
        ({}, False),  # one GPU: one process, as before
        ({"instance_type": "ml.g5.12xlarge"}, True),  # four GPUs: torchrun, one process each
        ({"instance_count": 2}, True),  # two instances of one GPU
    ],
)
def test_the_job_asks_for_torchrun_only_with_several_processes(
    aws: Aws, training: dict[str, Any], distributed: bool
) -> None:
    hyperparameters = resolve(aws, {"training": training}, **MULTI)["training"]["hyperparameters"]
    if distributed:
        assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
    else:
        assert "sagemaker_torch_distributed_enabled" not in hyperparameters
    # the job chooses its strategy by the rule the launch check applied
    assert "distributed_strategy" not in hyperparameters


def test_a_multi_instance_job_passes_createtrainingjobs_documented_constraints(aws: Aws) -> None:
    """The CreateTrainingJob request the workflow builds from the run (fixed fields as the
    state machine sets them) breaks none of the constraints in botocore's model of the API."""
    from finetune.local.request_shapes import constraint_violations

    run = resolve(
        aws,
        {"training": {"instance_type": "ml.g5.12xlarge", "instance_count": 3}},
        kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k",
        **MULTI,
    )
    training = run["training"]
    request = {
        "TrainingJobName": run["attempt"]["training_job_name"],
        "RoleArn": "arn:aws:iam::123456789012:role/training",
        "AlgorithmSpecification": {
            "TrainingImage": training["image_uri"],
            "TrainingInputMode": "File",
        },
        "HyperParameters": training["hyperparameters"],
        "InputDataConfig": training["input_data_config"],
        "OutputDataConfig": {"S3OutputPath": training["output_path"]},
        "ResourceConfig": training["resource_config"],
        "EnableManagedSpotTraining": training["spot"],
        "StoppingCondition": training["stopping_condition"],
        "CheckpointConfig": {
            "S3Uri": training["checkpoint_s3_uri"],
            "LocalPath": "/opt/ml/checkpoints",
        },
        "EnableInterContainerTrafficEncryption": True,
    }
    shape = aws.client("sagemaker").meta.service_model.operation_model("CreateTrainingJob")
    assert constraint_violations(shape.input_shape, request, "") == []
    assert "VolumeKmsKeyId" not in training["resource_config"]  # NVMe storage: no key


# -- the test set: every refusal names the request field, evaluation.dataset ----------------

TEST_SET = "s3://llmft-test-datasets/eval/test.jsonl"
BAD_ROW = {"messages": [{"role": "assistant", "content": "4"}]}


@pytest.mark.parametrize(
    ("rows", "dataset", "message"),
    [
        # the platform rules (checks), pinning, the data check: each names the field
        (None, "s3://someone-elses-bucket/test.jsonl", "is outside the platform's datasets"),
        (None, TEST_SET, f"{TEST_SET!r} does not exist"),
        ([BAD_ROW], TEST_SET, f"{TEST_SET}:1: messages[0] is a assistant turn first"),
    ],
)
def test_test_set_refusals_name_the_evaluation_dataset_field(
    aws: Aws, rows: list[dict[str, Any]] | None, dataset: str, message: str
) -> None:
    if rows is not None:
        aws.put_jsonl("eval/test.jsonl", rows)
    found = problems(aws, {"evaluation": {"dataset": dataset}})
    assert found.startswith(f"evaluation.dataset: {dataset!r}") or found.startswith(
        f"evaluation.dataset: {dataset}:"
    )
    assert message in found


# -- the Bedrock judge: only the models the platform's configuration allows -----------------

JUDGE = "anthropic.claude-3-haiku-20240307-v1:0"


def judged(model_id: str) -> dict[str, Any]:
    aws_test_set = {"dataset": TEST_SET, "judge": {"model_id": model_id}}
    return {"evaluation": aws_test_set}


def test_a_judge_the_platform_does_not_allow_is_refused(aws: Aws) -> None:
    aws.put_jsonl("eval/test.jsonl", [CHAT_ROW])
    assert problems(aws, judged(JUDGE)) == (
        f"evaluation.judge.model_id: {JUDGE!r} is not a judge model this platform allows "
        "(it allows none); the training role may invoke only the Bedrock models listed in "
        "judge_model_ids of the platform's configuration: ask the platform team to add it"
    )
    found = problems(aws, judged("amazon.nova-pro-v1:0"), judge_model_ids=(JUDGE,))
    assert found.startswith(
        f"evaluation.judge.model_id: 'amazon.nova-pro-v1:0' is not a judge model this platform "
        f"allows (it allows {JUDGE}); "
    )
    run = resolve(aws, judged(JUDGE), judge_model_ids=(JUDGE,))
    assert run["evaluation"]["judge"]["model_id"] == JUDGE
