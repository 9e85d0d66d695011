"""``finetune compare --plot``: the runs' loss curves and metric bars, as a PNG or an HTML page.

Curves come from the runs' MLflow runs (the step series the training job logs: ``train_loss``
and ``eval_loss``); bars from the run records (the metrics the gate saw). Runs not comparable
with the first one on a metric are drawn hatched and labelled so.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune.records import RunRow
from runspec.request import EVALUATION_METRICS

__all__ = ["CURVE_METRICS", "loss_curves", "write_plot"]

CURVE_METRICS = ("train_loss", "eval_loss")
Curves = dict[str, dict[str, list[tuple[int, float]]]]


def loss_curves(tracking_uri: str | None, rows: Sequence[RunRow]) -> Curves:
    """Per run id, per metric: (step, value) from its MLflow run; {} when MLflow has none."""
    if not tracking_uri:
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    curves: Curves = {}
    for row in rows:
        mlflow_run = row.mlflow_run_id or _find(client, row)
        if mlflow_run is None:
            continue
        curves[row.run_id] = {}
        for metric in CURVE_METRICS:
            try:
                history = client.get_metric_history(mlflow_run, metric)
            except Exception:  # an unknown run or metric: no curve
                history = []
            points = sorted((int(m.step), float(m.value)) for m in history)
            if points:
                curves[row.run_id][metric] = points
    return curves


def _find(client: Any, row: RunRow) -> str | None:
    try:
        found = client.search_runs(
            experiment_ids=[e.experiment_id for e in client.search_experiments()],
            filter_string=f"tags.run_id = '{row.run_id}'",
            max_results=1,
        )
    except Exception:
        return None
    return str(found[0].info.run_id) if found else None


def write_plot(rows: Sequence[RunRow], curves: Mapping[str, Any], path: Path) -> Path:
    """Draw the curves and bars into ``path`` (``.png``, or ``.html``: the picture and a table
    of the metrics, one self-contained file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in EVALUATION_METRICS if any(m in r.metrics for r in rows)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for row in rows:
        for metric, style in zip(CURVE_METRICS, ("-", "--"), strict=True):
            points = curves.get(row.run_id, {}).get(metric)
            if points:
                left.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    marker=".",
                    label=f"{row.run_id} {metric}",
                )
    left.set_title("Loss by step (MLflow)")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    if left.has_data():
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "no step metrics in MLflow", ha="center", va="center")
    width = 0.8 / max(len(rows), 1)
    for index, row in enumerate(rows):
        values = [row.metrics.get(m, 0.0) for m in metrics]
        positions = [i + index * width for i in range(len(metrics))]
        label = row.run_id + ("" if row.comparable else " (not comparable)")
        hatch = "" if row.comparable else "//"
        bars = right.bar(positions, values, width, label=label, hatch=hatch)
        right.bar_label(bars, fmt="%.3g", fontsize=7)
    right.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(metrics))], metrics)
    right.set_title(f"Metrics (ranked by {rows[0].ranked_by})" if rows else "Metrics")
    if rows:
        right.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(_html(rows, metrics, buffer.getvalue()), encoding="utf-8")
    else:
        path.write_bytes(buffer.getvalue())
    return path


def _html(rows: Sequence[RunRow], metrics: list[str], png: bytes) -> str:
    head = "".join(f"<th>{html.escape(r.run_id)}{' ★' if r.best else ''}</th>" for r in rows)
    body = ""
    for metric in metrics:
        cells = "".join(
            f"<td>{r.metrics[metric]:.4g}</td>" if metric in r.metrics else "<td>-</td>"
            for r in rows
        )
        body += f"<tr><th>{html.escape(metric)}</th>{cells}</tr>"
    notes = "".join(
        f"<li>{html.escape(r.run_id)}: not comparable ({html.escape(r.not_comparable or '')})</li>"
        for r in rows
        if not r.comparable
    )
    image = base64.b64encode(png).decode()
    return (
        "<!doctype html><meta charset='utf-8'><title>Runs compared</title>"
        f"<img alt='loss curves and metrics' src='data:image/png;base64,{image}'>"
        f"<table border='1'><tr><th></th>{head}</tr>{body}</table><ul>{notes}</ul>"
    )
