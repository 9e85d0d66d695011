"""``finetune``: launch, watch, retry, compare, promote/deploy, undeploy and estimate fine-tuning
runs; list the endpoints that serve them.

Talks to the deployed platform on AWS, or, with ``--local`` (the default without AWS
credentials), to the embedded local backend that runs the synthesized workflow on this machine.
Exit codes: 0 done, 1 a run or operation failed, 2 bad input (nothing was started).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from finetune.backends.base import Backend, ExecutionOutcome
from finetune.backends.common import check_run_id, elide
from finetune.cli_options import AwsFlag, JsonFlag, LocalFlag, ServeFlag, WaitFlag
from finetune.data_commands import data_app
from finetune.endpoint_commands import deploy_command, endpoints_command, undeploy_command
from finetune.errors import EXIT_FAILED, EXIT_USAGE, CliError
from finetune.invoke import invoke_command
from finetune.progress import RunProgress
from finetune.records import RunRow, mark_best, run_row
from finetune.run_tables import metric_option, print_comparison, print_runs
from finetune.runfile import load_run_file
from finetune.stage_model import stage_model_command

app = typer.Typer(
    name="finetune",
    help=__doc__,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app)  # finetune data check | upload
app.command("stage-model")(stage_model_command)  # a pinned Hub snapshot in the datasets bucket
app.command("invoke")(invoke_command)  # ask a deployed model
app.command("deploy")(deploy_command)
app.command("undeploy")(undeploy_command)
app.command("endpoints")(endpoints_command)
REPO = Path(__file__).resolve().parents[1]
DEMO_RUNS = (REPO / "examples/runs/local-demo-a.yaml", REPO / "examples/runs/local-demo-b.yaml")
T = TypeVar("T")


MetricOption = Annotated[
    str | None,
    typer.Option(
        help="Rank by this metric (eval_loss, perplexity, exact_match, token_f1, rougeL, "
        "json_valid, judge_score); default exact_match when runs have it, else eval_loss."
    ),
]


@dataclass
class Options:
    backend: str | None
    env: str
    json: bool
    debug: bool
    state_dir: Path
    #: The backend the command made, once it made one (its warnings are reported at the end).
    made: Backend | None = None

    @property
    def out(self) -> Console:
        return _console(stderr=False)

    @property
    def err(self) -> Console:
        return _console(stderr=True)


def _console(*, stderr: bool) -> Console:
    # No markup: run ids, paths, request values and failure causes are the user's text and are
    # printed as they are ("[/]" in a run name is not a closing tag). Styles come from Text.
    console = Console(stderr=stderr, soft_wrap=True, markup=False)
    if not console.is_terminal:
        # Rich assumes 80 columns when output is piped; tables of runs need more.
        console = Console(stderr=stderr, soft_wrap=True, width=160, markup=False)
    return console


def _line(*parts: str | tuple[str, str]) -> Text:
    """A line of plain text and (text, style) parts: never parsed as markup."""
    return Text.assemble(*parts)


@app.callback()
def main_options(
    ctx: typer.Context,
    local: Annotated[
        bool, typer.Option("--local", help="Use the embedded local backend (no AWS account).")
    ] = False,
    aws: Annotated[bool, typer.Option("--aws", help="Use the deployed platform on AWS.")] = False,
    env: Annotated[
        str, typer.Option("--env", "-e", help="Platform environment (stacks/config.py).")
    ] = "dev",
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the local backend keeps its state.")
    ] = Path(".finetune"),
) -> None:
    if local and aws:
        raise typer.BadParameter("choose one of --local and --aws")
    ctx.obj = Options(
        backend="local" if local else "aws" if aws else None,
        env=env,
        json=json_output,
        debug=debug,
        state_dir=state_dir,
    )


def _backend(options: Options) -> Backend:
    choice = options.backend
    if choice is None:
        import boto3

        choice = "aws" if boto3.Session().get_credentials() is not None else "local"
        if choice == "local":
            options.err.print(
                "No AWS credentials found: using the local backend (--aws to use AWS).",
                style="dim",
            )
    backend: Backend
    if choice == "local":
        from finetune.backends.local import LocalBackend

        backend = LocalBackend(options.state_dir)
    else:
        from finetune.backends.aws import AwsBackend
        from stacks.config import ConfigError, load_config

        try:
            config = load_config(options.env)
        except ConfigError as error:
            raise CliError(str(error), exit_code=EXIT_USAGE) from None
        backend = AwsBackend(config)
    options.made = backend
    return backend


def _run(
    ctx: typer.Context,
    action: Callable[[Options], T],
    *,
    json_output: bool = False,
    local: bool = False,
    aws: bool = False,
) -> T:
    """Run a command; errors become one line and an exit code (tracebacks with --debug).
    Options given after the command name override those given before it."""
    options: Options = ctx.obj
    if local and aws:
        raise typer.BadParameter("choose one of --local and --aws")
    options.json = options.json or json_output
    if local or aws:
        options.backend = "local" if local else "aws"
    try:
        return action(options)
    except CliError as error:
        if options.debug:
            raise
        options.err.print(_line(("error:", "bold red"), " ", error.message), highlight=False)
        if error.hint:
            options.err.print(f"hint: {error.hint}", style="dim", highlight=False)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as error:
        if options.debug:
            raise
        message = elide(f"{type(error).__name__}: {error}", 2000)
        options.err.print(_line(("error:", "bold red"), " ", message), highlight=False)
        options.err.print("hint: run again with --debug for the traceback", style="dim")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        # Damaged state entries the command skipped: named, never silently.
        for warning in getattr(options.made, "warnings", None) or ():
            options.err.print(_line(("warning:", "yellow"), " ", warning), highlight=False)


# -- progress reporting ---------------------------------------------------------------------


class _LiveReporter:
    """A one-line live view on a terminal; plain lines (state changes, steps) otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self._last_plain = ""

    @contextmanager
    def active(self) -> Iterator[_LiveReporter]:
        if self.console.is_terminal:
            with Live(console=self.console, refresh_per_second=4, transient=True) as live:
                self.live = live
                yield self
            self.live = None
        else:
            yield self

    def progress(self, progress: RunProgress) -> None:
        line = progress.line()
        if self.live is not None:
            self.live.update(Text(line))
            return
        key = f"{progress.state}|{progress.step}"
        if key != self._last_plain:
            self._last_plain = key
            self.console.print(line, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)


# -- commands ---------------------------------------------------------------------------------


@app.command()
def estimate(
    ctx: typer.Context,
    run_file: Annotated[Path, typer.Argument(help="Run request (YAML or JSON).")],
    region: Annotated[str | None, typer.Option(help="Pricing region.")] = None,
    tokens: Annotated[
        int | None, typer.Option(min=1, help="Training tokens (all epochs) to price.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="A local copy of the training JSONL to count tokens.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Per-GPU memory under the strategy the job will use, speed-up, time and cost for each
    instance count, and the cheapest configuration that fits (exit 2 when the platform would
    refuse the run)."""

    def action(options: Options) -> None:
        from finetune.estimating import estimate_request, render_estimate
        from stacks.config import load_config

        _, request = load_run_file(run_file)
        if request is None:
            raise CliError(f"{run_file}: a deploy request has nothing to estimate", exit_code=2)
        report = estimate_request(
            request, load_config(options.env), region=region, tokens=tokens, dataset=dataset
        )
        if options.json:
            options.out.print_json(json.dumps(report.to_dict()))
        else:
            render_estimate(options.out, report)
        refusal = report.refusal(run_file)
        if refusal is not None:
            # The platform refuses this run (launch exits 2 with the same rule).
            raise refusal

    _run(ctx, action, json_output=json_output)


@app.command()
def launch(
    ctx: typer.Context,
    run_file: Annotated[Path, typer.Argument(help="Run request (YAML or JSON).")],
    wait: WaitFlag = True,
    serve: ServeFlag = False,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Validate a run request, start it, and follow it to the end."""

    def action(options: Options) -> None:
        from finetune.datasets import load_launch_file, local_paths_for

        document = load_launch_file(run_file)  # local paths: staged by the local backend
        _follow(
            options,
            lambda backend, reporter: backend.launch(
                local_paths_for(backend.name, document), reporter=reporter, wait=wait, serve=serve
            ),
        )

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def watch(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Follow a run: current state, training step and loss, elapsed time, ETA."""

    def action(options: Options) -> None:
        check_run_id(run_id)
        _follow(options, lambda backend, reporter: backend.watch(run_id, reporter=reporter))

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def runs(
    ctx: typer.Context,
    experiment: Annotated[str | None, typer.Option(help="Only this experiment.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    metric: MetricOption = None,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Table of runs: status, key parameters, evaluation metrics, cost; the best one marked
    among the runs comparable with the newest (same test set, compatible tokenizer)."""

    def action(options: Options) -> None:
        backend = _backend(options)
        rows = [run_row(r, local=backend.name == "local") for r in backend.records()]
        if experiment:
            rows = [r for r in rows if r.experiment == experiment]
        _print_rows(options, mark_best(rows[:limit], metric_option(metric)), print_runs)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def compare(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    metric: MetricOption = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw loss curves and metric bars into this .png or .html file."),
    ] = None,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Parameters and metrics of runs side by side; runs scored on another test set (or with
    an incompatible tokenizer) than the first are marked not comparable."""

    def action(options: Options) -> None:
        if len(run_ids) < 2:
            raise CliError("compare needs at least two run ids", exit_code=EXIT_USAGE)
        for run_id in run_ids:
            check_run_id(run_id)
        if plot is not None and plot.suffix.lower() not in (".png", ".html", ".htm"):
            raise CliError(f"--plot {plot}: give a .png or .html file", exit_code=EXIT_USAGE)
        backend = _backend(options)
        rows = [run_row(backend.record(r), local=backend.name == "local") for r in run_ids]
        rows = mark_best(rows, metric_option(metric), reference=rows[0])
        if plot is not None:
            from finetune.plots import loss_curves, write_plot

            session = getattr(backend, "session", None)
            tracking = session.mlflow_uri if session else os.environ.get("MLFLOW_TRACKING_URI")
            write_plot(rows, loss_curves(tracking, rows), plot)
            options.err.print(f"plot: {plot}", highlight=False)
        _print_rows(options, rows, print_comparison)

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def promote(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    serve: ServeFlag = False,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Approve a run's model package, and deploy it when the run asked for deployment."""

    def action(options: Options) -> None:
        check_run_id(run_id)
        _follow(
            options,
            lambda backend, reporter: backend.promote(run_id, reporter=reporter, serve=serve),
        )

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def retry(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id of a failed or stopped run.")],
    wait: WaitFlag = True,
    json_output: JsonFlag = False,
    local: LocalFlag = False,
    aws: AwsFlag = False,
) -> None:
    """Resume a run that did not finish at its first step that did not complete (its run
    record says which): completed steps are not repeated, training resumes as the run's next
    attempt from its checkpoints. The same as {"retry_run": RUN} in the console."""

    def action(options: Options) -> None:
        check_run_id(run_id)
        _follow(
            options,
            lambda backend, reporter: backend.launch(
                {"retry_run": run_id}, reporter=reporter, wait=wait, serve=False
            ),
        )

    _run(ctx, action, json_output=json_output, local=local, aws=aws)


@app.command()
def demo(
    ctx: typer.Context,
    keep: Annotated[
        bool, typer.Option(help="Keep earlier demo runs instead of starting fresh.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Fine-tune a tiny LLM twice, locally, through the real workflow; print the run table."""

    def action(options: Options) -> None:
        from finetune.backends.local import LocalBackend

        state_dir = options.state_dir / "demo"
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
        backend = LocalBackend(state_dir)
        options.made = backend
        for run_file in DEMO_RUNS:
            document, _ = load_run_file(run_file)
            options.err.print(str(run_file.relative_to(REPO)), style="bold", highlight=False)
            reporter = _LiveReporter(options.err)
            with reporter.active():
                outcome = backend.launch(document, reporter=reporter, wait=True, serve=False)
            _describe_outcome(options.err, outcome)
            if outcome.status != "SUCCEEDED":
                raise CliError(f"demo run {outcome.run_id} {outcome.status.lower()}")
        rows = mark_best([run_row(r, local=True) for r in backend.records()])
        _print_rows(options, rows, print_runs)
        options.err.print(
            f"MLflow: mlflow ui --backend-store-uri {backend.session.mlflow_uri}", style="dim"
        )

    _run(ctx, action, json_output=json_output)


# -- rendering --------------------------------------------------------------------------------


def _follow(
    options: Options, operation: Callable[[Backend, _LiveReporter], ExecutionOutcome]
) -> None:
    """Run an operation that follows an execution, with live progress, then report it."""
    backend = _backend(options)
    reporter = _LiveReporter(options.err)
    with reporter.active():
        outcome = operation(backend, reporter)
    _finish(options, outcome)


def _print_rows(
    options: Options, rows: list[RunRow], table: Callable[[Console, list[RunRow]], None]
) -> None:
    if options.json:
        options.out.print_json(json.dumps([r.to_dict() for r in rows]))
    else:
        table(options.out, rows)


def _finish(options: Options, outcome: ExecutionOutcome) -> None:
    if options.json:
        options.out.print_json(json.dumps(outcome.to_dict(), default=str))
    else:
        _describe_outcome(options.out, outcome)
    if not outcome.succeeded:
        raise typer.Exit(EXIT_FAILED)


def _describe_outcome(console: Console, outcome: ExecutionOutcome) -> None:
    style = "green" if outcome.succeeded else "red"
    headline = _line(f"run {outcome.run_id}: ", (outcome.status, style))
    if outcome.states:
        headline.append(f" after {len(outcome.states)} states ({outcome.states[-1]})")
    console.print(headline, highlight=False)
    summary = outcome.summary or {}
    if summary.get("metrics"):
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(summary["metrics"].items()))
        console.print(f"  metrics: {metrics}", highlight=False)
    if summary.get("gate"):
        console.print(f"  gate: {summary['gate'].get('reason')}", highlight=False)
    for key in ("model_package_arn", "endpoint_name"):
        if summary.get(key):
            console.print(f"  {key.replace('_', ' ')}: {summary[key]}", highlight=False)
    if outcome.error:
        # In full: a recorded cause names the file and line at its end.
        console.print(
            _line("  ", (outcome.error, "red"), ": ", outcome.cause or ""), highlight=False
        )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="finetune")


if __name__ == "__main__":
    main()
