"""Data checked at launch inside the executed workflow: the launch function reads the pinned
object versions with its own role (the IAM twin evaluates every call; the fixture fails on any
denial), and a run whose data the job would refuse ends before any training job starts."""

from __future__ import annotations

from tests.workflow.conftest import CHAT, Workflow


def test_bad_rows_fail_the_run_in_launch_naming_object_and_line(workflow: Workflow) -> None:
    out_of_order = {"messages": list(reversed(CHAT[0]["messages"]))}
    uri = workflow.put_dataset("datasets/chat/bad.jsonl", [*CHAT, out_of_order])

    result = workflow.run(workflow.base_request(dataset={"train": uri}))

    assert result.error == "RunRequestInvalid"
    message = result.cause_json()["errorMessage"]
    assert message.startswith(
        f"dataset.train: {uri}:2: messages[0] is a assistant turn first, expected user"
    )
    assert workflow.training.jobs == []
    assert "Train model" not in result.states


def test_good_data_is_read_at_its_pinned_version_with_the_launch_role(workflow: Workflow) -> None:
    result = workflow.run(workflow.base_request())

    assert "Train model" in result.states  # resolved: its data passed the check
    reads = workflow.iam.coverage()
    launch = next(principal for principal in reads if "Launch" in principal)
    assert reads[launch]["s3:GetObjectVersion"] >= 2  # train and validation, by version
