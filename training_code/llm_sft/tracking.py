"""Optional MLflow tracking, enabled by `MLFLOW_TRACKING_URI`.

The URI is a SageMaker AI MLflow tracking-server ARN on AWS (resolved by the sagemaker-mlflow
plugin), or a local path / `sqlite:///...` offline. mlflow is imported only when tracking is
on (it takes seconds). Tracking is best effort: any MLflow error is logged as a warning and
tracking switches itself off, so it can never cost the trained model.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "llm-finetune"
#: The MLflow REST calls this tracker makes (set_experiment, start_run or resuming one, tags,
#: params and metrics in batches, dataset inputs, end_run; artifacts go to S3 after GetRun
#: resolves the run's artifact URI). The training role is granted exactly these on the MLflow
#: App (stacks.components.sagemaker_roles), and the offline twin evaluates them for every job.
MLFLOW_CALLS = (
    "GetExperimentByName",
    "CreateExperiment",
    "CreateRun",
    "GetRun",
    "UpdateRun",
    "SetTag",
    "LogBatch",
    "LogInputs",
)
IDENTITY_ENV = "FT_DATASET_IDENTITY"
RUN_ID_ENV = "FT_RUN_ID"

T = TypeVar("T")


def dataset_identity_from_env() -> dict[str, Any]:
    """`FT_DATASET_IDENTITY`: `{"train": {"uri": ..., "version_id": ..., "etag": ...}, ...}`."""
    raw = os.environ.get(IDENTITY_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning("%s is not valid JSON; ignoring it", IDENTITY_ENV)
        return {}
    if not isinstance(value, dict):
        logger.warning("%s must be a JSON object; ignoring it", IDENTITY_ENV)
        return {}
    return value


class Tracker:
    """No-op tracker: what runs when tracking is off."""

    enabled = False

    def log_params(self, params: Mapping[str, object]) -> None:
        """Record run parameters."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values, per step or final."""

    def log_datasets(self, channels: Mapping[str, Mapping[str, Any]]) -> None:
        """Record the identity of each dataset channel."""

    def log_dict(self, payload: Mapping[str, Any], name: str) -> None:
        """Store a JSON artifact."""

    def log_model_folder(self, folder: Path) -> None:
        """Store the saved model folder as artifacts."""

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Record tags (versions, identities)."""

    def log_table(self, columns: list[str], rows: list[list[object]], name: str) -> None:
        """Store a table artifact the MLflow UI shows as a table."""

    def finish(self, succeeded: bool) -> None:
        """Close the run."""


class MlflowTracker(Tracker):
    enabled = True

    def __init__(self, mlflow: Any, run: Any) -> None:
        self._mlflow = mlflow
        self.run = run

    def _safely(self, what: str, action: Callable[[], T]) -> T | None:
        if not self.enabled:
            return None
        try:
            return action()
        except Exception as error:  # tracking must never fail the job
            logger.warning("MLflow %s failed, tracking disabled for this job: %s", what, error)
            self.enabled = False
            return None

    def log_params(self, params: Mapping[str, object]) -> None:
        values = {k: str(v)[:6000] for k, v in params.items()}
        self._safely("log_params", lambda: self._mlflow.log_params(values))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._safely("log_metrics", lambda: self._mlflow.log_metrics(values, step=step))

    def log_datasets(self, channels: Mapping[str, Mapping[str, Any]]) -> None:
        def action() -> None:
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            for name, info in channels.items():
                uri = str(info.get("uri") or info.get("path") or name)
                digest = str(info.get("sha256", ""))
                with warnings.catch_warnings():
                    # Local paths match two registered source types; either is fine.
                    warnings.simplefilter("ignore", UserWarning)
                    source = resolve_dataset_source(uri)
                dataset = MetaDataset(  # type: ignore[abstract]
                    source=source, name=name, digest=digest[:32] or None
                )
                context = "training" if name == "train" else "evaluation"
                self._mlflow.log_input(dataset, context=context)
                tags = {
                    f"dataset.{name}.{key}": str(value)
                    for key, value in info.items()
                    if key in ("uri", "version_id", "etag", "sha256", "rows", "source")
                }
                self._mlflow.set_tags(tags)

        self._safely("log_input", action)
        self.log_dict(dict(channels), "dataset_identity.json")

    def log_dict(self, payload: Mapping[str, Any], name: str) -> None:
        self._safely("log_dict", lambda: self._mlflow.log_dict(dict(payload), name))

    def log_model_folder(self, folder: Path) -> None:
        self._safely("log_artifacts", lambda: self._mlflow.log_artifacts(str(folder), "model"))

    def set_tags(self, tags: Mapping[str, object]) -> None:
        values = {k: str(v)[:5000] for k, v in tags.items()}
        self._safely("set_tags", lambda: self._mlflow.set_tags(values))

    def log_table(self, columns: list[str], rows: list[list[object]], name: str) -> None:
        # What mlflow.log_table writes (pandas' "split" JSON and the run tag that makes the UI
        # show it as a table), without needing pandas in the training image.
        self.log_dict({"columns": columns, "data": rows}, name)
        logged = [{"path": name, "type": "table"}]
        self.set_tags({"mlflow.loggedArtifacts": json.dumps(logged)})

    def finish(self, succeeded: bool) -> None:
        status = "FINISHED" if succeeded else "FAILED"
        self._safely("end_run", lambda: self._mlflow.end_run(status=status))


def _previous_run(marker: Path | None, key: str) -> str | None:
    """The MLflow run an earlier attempt of this job (same checkpoints, same key) opened."""
    if marker is None or not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("run_id"), str):
        return str(saved["run_id"])
    return None


def start_tracking(resume_marker: Path | None = None, resume_key: str = "") -> Tracker:
    """An MLflow run when `MLFLOW_TRACKING_URI` is set, else the no-op tracker.

    `resume_marker` (a file beside the checkpoints, which SageMaker restores on a spot restart)
    remembers the run, so that a restarted job continues the same MLflow run instead of
    opening a second one; `resume_key` identifies the configuration it belongs to.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return Tracker()
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT
    run_name = os.environ.get(RUN_ID_ENV, "").strip() or None
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        run = None
        previous = _previous_run(resume_marker, resume_key)
        if previous is not None:
            try:
                run = mlflow.start_run(run_id=previous)
                logger.info("continuing MLflow run %s of the interrupted attempt", previous)
            except Exception as error:
                logger.warning(
                    "cannot continue MLflow run %s (%s); starting a new one", previous, error
                )
        if run is None:
            run = mlflow.start_run(run_name=run_name)
        if run_name:
            mlflow.set_tag("run_id", run_name)
        job = os.environ.get("TRAINING_JOB_NAME") or os.environ.get("SM_TRAINING_JOB_NAME")
        if job:
            mlflow.set_tag("sagemaker.training_job", job)
        if resume_marker is not None:
            resume_marker.parent.mkdir(parents=True, exist_ok=True)
            resume_marker.write_text(json.dumps({"run_id": run.info.run_id, "key": resume_key}))
    except Exception as error:
        logger.warning("MLflow tracking at %s unavailable, continuing without it: %s", uri, error)
        return Tracker()
    logger.info("MLflow run %s in experiment %r", run.info.run_id, experiment)
    return MlflowTracker(mlflow, run)
