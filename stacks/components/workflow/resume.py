"""Resume a retried run at the first step it did not complete (runspec.retry decides which, from
the run record): what the completed steps produced is put back where the workflow keeps it
(``$.training``, ``$.recorded``, ``$.registration``) by Pass states, and the run goes on from
there. A run that is not a retry (``$.run.resume`` null) trains, as does a retry whose training
did not complete (a new attempt, from the run's checkpoints)."""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

Condition = sfn.Condition

__all__ = ["resume_point"]


def resume_point(
    scope: Construct,
    *,
    train: sfn.IChainable,
    record: sfn.IChainable,
    register: sfn.IChainable,
    deploy: sfn.IChainable,
    complete: sfn.IChainable,
) -> sfn.IChainable:
    """The Choice after the run's start is recorded: ``train`` unless ``$.run.resume.step``
    names a later step. Each later step first restores what the earlier ones produced."""
    step = "$.run.resume.step"

    def restore(name: str, field: str, comment: str) -> sfn.Pass:
        return sfn.Pass(
            scope,
            name,
            comment=comment,
            input_path=f"$.run.resume.{field}",
            result_path=f"$.{field}",
        )

    completed_job = restore(
        "Resume with the completed job",
        "training",
        "Its training job completed: record it, do not train again.",
    )
    completed_job.next(record)
    trained = restore(
        "Resume with the trained model",
        "training",
        "Recorded and passed its gate: the model and evaluation need not be made again.",
    )
    evaluated = restore("Resume with its evaluation", "recorded", "The recorded evaluation.")
    package = restore("Resume with its model package", "registration", "Registered already.")
    after_registration = (
        sfn.Choice(scope, "Deploy or complete?")
        .when(Condition.string_equals(step, "deployment"), deploy)
        .otherwise(complete)
    )
    package.next(after_registration)
    registered = (
        sfn.Choice(scope, "Registered already?")
        .when(Condition.string_equals(step, "registration"), register)
        .otherwise(package)
    )
    trained.next(evaluated).next(registered)
    return (
        sfn.Choice(
            scope,
            "Resume where?",
            comment="A retried run starts at its first step that did not complete "
            "($.run.resume, from the run record); any other run trains.",
        )
        # Guarded first: $.run.resume is null unless the run is retried.
        .when(Condition.not_(Condition.is_present(step)), train)
        .when(Condition.string_equals(step, "recording"), completed_job)
        .when(
            Condition.or_(
                *(
                    Condition.string_equals(step, s)
                    for s in ("registration", "deployment", "completion")
                )
            ),
            trained,
        )
        .otherwise(train)
    )
