"""How ``finetune runs`` and ``finetune compare`` show runs: the runs table (best marked among
comparable runs, the others marked with why) and runs side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from finetune.errors import EXIT_USAGE, CliError
from finetune.records import INTERRUPTED_HINT, KEY_PARAMETERS, RunRow

__all__ = ["metric_option", "number", "print_comparison", "print_runs", "task_metrics"]


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def metric_option(name: str | None) -> str | None:
    from runspec.request import EVALUATION_METRICS

    if name is not None and name not in EVALUATION_METRICS:
        raise CliError(
            f"--metric {name!r}: not one of {', '.join(EVALUATION_METRICS)}", exit_code=EXIT_USAGE
        )
    return name


def task_metrics(rows: list[RunRow]) -> list[str]:
    from runspec.request import EVALUATION_METRICS

    return [
        m
        for m in EVALUATION_METRICS
        if m not in ("eval_loss", "perplexity") and any(m in r.metrics for r in rows)
    ]


def print_runs(console: Console, rows: list[RunRow]) -> None:
    if not rows:
        console.print("no runs yet")
        return
    metric = rows[0].ranked_by
    tasks = task_metrics(rows)
    table = Table(
        title=f"Fine-tuning runs (best marked ★: best {metric} among passing runs comparable "
        "with the newest; ≠ scored on another basis, not comparable)"
    )
    for column in (
        "",
        "run",
        "status",
        "base model",
        *KEY_PARAMETERS[:3],
        "eval_loss",
        "perplexity",
        *tasks,
        "cost $",
        "updated",
    ):
        table.add_column(column, no_wrap=column in ("run", "status"))
    for row in rows:
        table.add_row(
            "★" if row.best else "≠" if not row.comparable else "",
            row.run_id,
            row.status,
            row.base_model.rsplit("/", 2)[-2] if row.base_model.endswith("/") else row.base_model,
            *(row.parameters.get(name, "-") for name in KEY_PARAMETERS[:3]),
            number(row.eval_loss),
            number(row.perplexity),
            *(number(row.metrics.get(m)) for m in tasks),
            "local" if row.cost_usd is None else f"{row.cost_usd:.2f}",
            row.updated_at[:19].replace("T", " "),
        )
    console.print(table)
    for row in rows:
        if not row.comparable:
            console.print(
                f"≠ {row.run_id}: not comparable on {metric} ({row.not_comparable})",
                style="dim",
                highlight=False,
            )
    if any(row.status == "interrupted" for row in rows):
        console.print(
            f"interrupted: {INTERRUPTED_HINT} (or promote it again, if its deployment was)",
            style="dim",
            highlight=False,
        )


def print_comparison(console: Console, rows: list[RunRow]) -> None:
    table = Table(title="Runs side by side")
    table.add_column("")
    for row in rows:
        table.add_column(("★ " if row.best else "") + row.run_id)
    fields: list[tuple[str, Callable[[RunRow], Any]]] = [
        ("status", lambda r: r.status),
        ("base model", lambda r: r.base_model),
        ("instance", lambda r: f"{r.instance_type}{' (spot)' if r.spot else ''}"),
        *((name, lambda r, n=name: r.parameters.get(n, "-")) for name in KEY_PARAMETERS),
        ("eval_loss", lambda r: number(r.eval_loss)),
        ("perplexity", lambda r: number(r.perplexity)),
        *((name, lambda r, n=name: number(r.metrics.get(n))) for name in task_metrics(rows)),
        ("train_loss", lambda r: number(r.train_loss)),
        (
            "scored on",
            lambda r: f"{r.scored['dataset']} {r.scored['data_sha256'][:12]}" if r.scored else "-",
        ),
        (
            f"comparable ({rows[0].ranked_by})",
            lambda r: "yes" if r.comparable else f"no: {r.not_comparable}",
        ),
        ("gate", lambda r: r.gate or "-"),
        ("model package", lambda r: r.model_package or "-"),
        ("endpoint", lambda r: r.endpoint or "-"),
    ]
    for label, value in fields:
        table.add_row(label, *(str(value(r)) for r in rows))
    console.print(table)
