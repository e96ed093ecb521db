"""A typed in-process actuator for reconciler tests: it satisfies `npuctl.agent.actuator.Actuator`, so a
`Reconciler` takes it as it takes the real one, builds through whatever the test hands it, records what
readiness is told, and refuses the calls that only follow a finished build (none of its builds finish)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from npuctl.agent.actuator import Actuator
from npuctl.agent.status import RunFacts
from npuctl.artifacts import BuildResult
from npuctl.artifacts.result import ProgressCallback, Survey
from npuctl.schema import LoadedDeployment, ModelDeployment
from npuctl.schema.cost import LoadCost
from npuctl.schema.status import ArtifactStatus
from npuctl.serve.models import ServedModel
from npuctl.serve.standby import Admit

Build = Callable[[LoadedDeployment, ProgressCallback, threading.Event], BuildResult]


class FakeActuator:
    """Builds by raising `error` when it is set, else by running `step`; counts the attempts in `builds`.
    `selected` is what `selects` answers for every deployment; `problems` is what readiness was last told,
    by subject."""

    def __init__(self, *, error: Exception | None = None, step: Build | None = None,
                 selected: tuple[bool, str] = (True, "")) -> None:
        self.error = error
        self.step = step
        self.selected = selected
        self.builds = 0
        self.problems: dict[str, tuple[str, str]] = {}

    def build(self, loaded: LoadedDeployment, progress: ProgressCallback, stop: threading.Event) -> BuildResult:
        self.builds += 1
        if self.error is not None:
            raise self.error
        assert self.step is not None, "the test gave the fake actuator neither an error nor a step"
        return self.step(loaded, progress, stop)

    def load(self, loaded: LoadedDeployment, built: BuildResult, share: str) -> ServedModel:
        raise AssertionError("nothing the fake builds is loaded")

    def serve(self, deployment: ModelDeployment, model: ServedModel) -> None:
        raise AssertionError("nothing the fake builds is served")

    def reconfigure(self, deployment: ModelDeployment) -> None:
        raise AssertionError("nothing the fake builds is serving")

    def unavailable(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        """Routes stay unrouted: no registry here."""

    def standby(self, deployment: ModelDeployment, admit: Admit, message: str) -> None:
        raise AssertionError("the fake's tests declare no residency")

    def unload(self, name: str) -> None:
        """Nothing is loaded, so there is nothing to close."""

    def not_ready(self, subject: str, problem: tuple[str, str] | None) -> None:
        if problem is None:
            self.problems.pop(subject, None)
        else:
            self.problems[subject] = problem

    def describe(self, model: ServedModel) -> RunFacts:
        raise AssertionError("nothing the fake builds is loaded")

    def describe_build(self, built: BuildResult) -> list[ArtifactStatus]:
        raise AssertionError("none of the fake's builds finish")

    def estimate(self, loaded: LoadedDeployment, built: BuildResult) -> LoadCost:
        raise AssertionError("none of the fake's builds finish")

    def selects(self, deployment: ModelDeployment) -> tuple[bool, str]:
        return self.selected

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> Survey:
        raise AssertionError("the fake's tests ask for no plan")


_: type[Actuator] = FakeActuator  # mypy checks here that the fake still fits the protocol
