"""Runs compared only when scored on a comparable basis; the comparison drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from finetune.plots import loss_curves, write_plot
from finetune.records import mark_best, run_row

BASIS = {
    "dataset": "test",
    "data_sha256": "a" * 64,
    "tokenizer": "t" * 64,
    "generation": "greedy max_new_tokens=256",
}


def record(
    run_id: str, metrics: dict[str, float], scoring: dict[str, Any] | None
) -> dict[str, Any]:
    trained: dict[str, Any] = {"milestone": "trained", "metrics": metrics, "mlflow_run_id": None}
    if scoring is not None:
        trained["scoring"] = scoring
    return {
        "run_id": run_id,
        "status": "completed",
        "updated_at": "2026-12-01T00:00:00",
        "run": {"request": {"experiment_name": "x"}, "base_model": "m", "training": {}},
        "milestones": [trained],
    }


def rows() -> list[Any]:
    other_set = {**BASIS, "data_sha256": "b" * 64}
    other_tokenizer = {**BASIS, "tokenizer": "u" * 64}
    runs = [
        ("newest", {"exact_match": 0.6, "eval_loss": 1.3}, BASIS),
        ("better", {"exact_match": 0.7, "eval_loss": 1.2}, BASIS),
        ("easier-set", {"exact_match": 0.9, "eval_loss": 0.9}, other_set),
        ("other-tokenizer", {"exact_match": 0.65, "eval_loss": 0.5}, other_tokenizer),
    ]
    return [run_row(record(*run), local=True) for run in runs]


def test_the_best_is_the_best_comparable_run_and_the_rest_are_marked() -> None:
    marked = {r.run_id: r for r in mark_best(rows())}
    assert marked["better"].best  # 0.9 on another test set does not count
    assert not marked["easier-set"].comparable
    assert "scored on other data" in (marked["easier-set"].not_comparable or "")
    assert marked["other-tokenizer"].comparable  # exact_match does not depend on tokens

    by_loss = {r.run_id: r for r in mark_best(rows(), "eval_loss")}
    assert not by_loss["other-tokenizer"].comparable
    assert by_loss["better"].best  # 0.5 and 0.9 were measured differently


def test_compare_draws_curves_and_bars_to_png_and_html(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("x")
    marked = mark_best(rows()[:3], reference=None)
    for row in marked:
        run = client.create_run(experiment, tags={"run_id": row.run_id}).info.run_id
        for step in range(1, 6):
            client.log_metric(run, "train_loss", 3.0 / step, step=step)
            client.log_metric(run, "eval_loss", 3.5 / step, step=step)
    curves = loss_curves(store, marked)
    assert [step for step, _ in curves["newest"]["train_loss"]] == [1, 2, 3, 4, 5]

    png = write_plot(marked, curves, tmp_path / "out.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    page = write_plot(marked, curves, tmp_path / "out.html").read_text()
    assert "data:image/png;base64," in page
    assert "easier-set: not comparable" in page


def test_plot_needs_a_png_or_html_file(tmp_path: Path) -> None:
    from finetune.cli import app

    result = CliRunner().invoke(
        app, ["--local", "--state-dir", str(tmp_path), "compare", "a", "b", "--plot", "x.pdf"]
    )
    assert result.exit_code == 2
