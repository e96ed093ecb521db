"""The store-backed step runner: a step whose key is stored is not run again; a missing one is fetched from
a published store if one has it, else run in a work folder under the key's lock and committed."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

from npuctl.artifacts import facts, progress
from npuctl.artifacts.errors import BuildError, NotBuiltError
from npuctl.artifacts.published import location
from npuctl.artifacts.result import ProgressCallback, StepEvent, StepRun, StepState
from npuctl.artifacts.store import Record, Store
from npuctl.runtime import qnn

F = TypeVar("F", bound=facts.Facts)


class StepRunner(Protocol):
    """`Runner.run` as the build graphs call it."""

    def __call__(self, kind: type[F], inputs: dict[str, str], parameters: dict[str, Any],
                 work: Callable[[Path], F]) -> tuple[Record[F], StepRun]: ...


def step_key(step: str, inputs: dict[str, str], parameters: dict[str, Any], tool_versions: dict[str, str]) -> str:
    blob = json.dumps({"step": step, "inputs": inputs, "parameters": parameters, "tools": tool_versions},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Runner:
    """Runs steps through the store: look up by key, else build in a work folder under the key's lock."""

    def __init__(self, store: Store, progress: ProgressCallback, cached_only: bool,
                 published: Sequence[location.ArtifactSource] = ()) -> None:
        self.store = store
        self.progress = progress
        self.cached_only = cached_only
        self.published = published
        self.tools = qnn.tool_versions()
        self.runs: dict[str, StepRun] = {}
        self.refused: dict[str, str] = {}
        """Step key -> why a published copy was not taken (said when the step cannot be built here either)."""

    def key(self, step: str, inputs: dict[str, str], parameters: dict[str, Any]) -> str:
        """The key `run` stores this step under (with this host's tool versions)."""
        return step_key(step, inputs, parameters, self.tools)

    def run(
        self,
        kind: type[F],
        inputs: dict[str, str],
        parameters: dict[str, Any],
        work: Callable[[Path], F],
        *,
        target: str | None = None,
        bucket: int | None = None,
    ) -> tuple[Record[F], StepRun]:
        """The step `kind.step`, whose `work(folder)` writes its files into `folder` and returns its facts."""
        step = kind.step
        key = self.key(step, inputs, parameters)
        started = time.perf_counter()
        record = self._stored(key, kind)
        if record is None and self.cached_only and not self.published:
            raise NotBuiltError(step, f"not in the store {self.store.root} (key {key[:12]})")
        if record is None:
            with self.store.lock(key):
                record = self._stored(key, kind)  # another builder may have finished it while we waited
                if record is None:
                    record = self._fetch(kind, key, target, bucket)
                    seconds = time.perf_counter() - started
                    if record is None and self.cached_only:
                        refused = f"; published copies refused: {self.refused[key]}" if key in self.refused else ""
                        raise NotBuiltError(step, f"not in the store {self.store.root} nor published (key {key[:12]})"
                                            f"{refused}")
                    if record is None:
                        record = self._execute(kind, key, inputs, parameters, work, target, bucket)
                        seconds = record.seconds
                    run = StepRun(step, key, False, seconds)
                    self.runs.setdefault(key, run)
                    return record, self.runs[key]
        self.progress(StepEvent(step, StepState.CACHED, key, target, bucket, time.perf_counter() - started))
        run = self.runs.setdefault(key, StepRun(step, key, True, time.perf_counter() - started))
        return record, run

    def _stored(self, key: str, kind: type[F]) -> Record[F] | None:
        """The stored record of `key`; None also when its facts are another kind's (it is then built over)."""
        record = self.store.get(key)
        return record.narrowed(kind) if record is not None else None

    def _fetch(self, kind: type[F], key: str, target: str | None, bucket: int | None) -> Record[F] | None:
        """The step from the first published store that has it, committed to the local store; None if none has."""
        step = kind.step
        for source in self.published:
            started = time.perf_counter()
            folder = self.store.new_workdir(key)
            try:
                published = source.fetch_step(step, key, folder)
                found = published.narrowed(kind) if published is not None else None
                if published is not None and found is None:
                    raise location.FetchError(f"{source.location}: step {key[:12]} records the facts of "
                                              f"{published.details.kind}, not of {step}")
            except location.FetchError as exc:
                # A broken or unreachable store costs a local build, never the deployment.
                self.progress(StepEvent(step, StepState.RUNNING, key, target, bucket, message=f"not fetched: {exc}"))
                self.refused[key] = str(exc)
                found = None
            if found is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            record = self.store.commit(folder, key=key, inputs=found.inputs, parameters=found.parameters,
                                       tool_versions=found.tool_versions, seconds=found.seconds, details=found.details)
            self.progress(StepEvent(step, StepState.FETCHED, key, target, bucket, time.perf_counter() - started,
                                    message=source.location))
            return record
        return None

    def _execute(self, kind: type[F], key: str, inputs: dict[str, str], parameters: dict[str, Any],
                 work: Callable[[Path], F], target: str | None, bucket: int | None) -> Record[F]:
        step = kind.step
        self.progress(StepEvent(step, StepState.RUNNING, key, target, bucket))
        folder = self.store.new_workdir(key)
        started = time.perf_counter()
        try:
            with progress.reporting(self._reporter(step, key, target, bucket, started)):
                details = work(folder)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            error = exc if isinstance(exc, BuildError) else BuildError.wrapping(step, exc)
            self.progress(StepEvent(step, StepState.FAILED, key, target, bucket,
                                    time.perf_counter() - started, error.message))
            if error is exc:
                raise
            raise error from exc
        seconds = time.perf_counter() - started
        record = self.store.commit(folder, key=key, inputs=inputs, parameters=parameters,
                                   tool_versions=self.tools, seconds=seconds, details=details)
        self.progress(StepEvent(step, StepState.DONE, key, target, bucket, seconds))
        return record

    def _reporter(self, step: str, key: str, target: str | None, bucket: int | None,
                  started: float) -> progress.Reporter:
        """What the step's own reports become: RUNNING events, at most about one a second."""
        throttle = progress.Throttle()

        def forward(done: progress.Progress, message: str | None) -> None:
            if throttle.passes(done, message):
                self.progress(StepEvent(step, StepState.RUNNING, key, target, bucket, time.perf_counter() - started,
                                        message, done))

        return forward


def dist_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    # Read from package metadata: importing torch only to learn its version costs seconds on cached builds.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
