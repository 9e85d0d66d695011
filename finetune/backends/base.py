"""What every backend offers the CLI, and the outcomes it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from finetune.endpoints import EndpointRow
from finetune.progress import RunProgress

__all__ = ["Backend", "ExecutionOutcome", "Reporter"]


class Reporter(Protocol):
    def progress(self, progress: RunProgress) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class ExecutionOutcome:
    """One workflow execution, as a person or a script wants to see it."""

    run_id: str
    execution_name: str
    status: str  # RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    started: bool = True
    states: list[str] = field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    summary: dict[str, Any] | None = None
    endpoints: dict[str, str] = field(default_factory=dict)  # local: name -> URL

    @property
    def transitions(self) -> int:
        return max(len(self.states) - 1, 0)

    @property
    def succeeded(self) -> bool:
        return self.status in ("SUCCEEDED", "RUNNING")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "transitions": self.transitions}


class Backend(Protocol):
    name: str

    def launch(
        self, document: dict[str, Any], *, reporter: Reporter, wait: bool, serve: bool
    ) -> ExecutionOutcome: ...

    def watch(self, run_id: str, *, reporter: Reporter) -> ExecutionOutcome: ...

    def records(self) -> list[dict[str, Any]]: ...

    def record(self, run_id: str) -> dict[str, Any]: ...

    def promote(
        self,
        run_id: str,
        *,
        reporter: Reporter,
        serve: bool,
        deployment: dict[str, Any] | None = None,
    ) -> ExecutionOutcome: ...

    def undeploy(self, target: str, *, reporter: Reporter) -> ExecutionOutcome: ...

    def endpoints(self) -> list[EndpointRow]: ...
