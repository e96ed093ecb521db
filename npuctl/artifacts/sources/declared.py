"""A deployment's declared sources, resolved: the model and its prebuilt pack, each a `resolve` step in the
build's progress, and a refused source placed at the manifest field that names it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.result import StepEvent, StepRun, StepState
from npuctl.artifacts.sources.context import ResolvedSource, SourceContext, SourceRefused
from npuctl.artifacts.sources.resolve import resolve
from npuctl.artifacts.steps import Runner
from npuctl.schema.loader import Loc
from npuctl.schema.models import DeploymentSpec, Format

MODEL_SOURCE: Loc = ("spec", "model", "source")
PACK_SOURCE: Loc = ("spec", "build", "prebuilt", "source")


@dataclass(frozen=True)
class DeclaredSources:
    spec: DeploymentSpec
    base_dir: Path
    runner: Runner
    roots: tuple[Path, ...] | None
    """Folders `file:` sources must lead into (None: anywhere; empty: none)."""
    where: Callable[[Loc], str] | None
    """file:line:col of a manifest field, when the deployment came from a file."""

    def model(self) -> tuple[ResolvedSource, StepRun]:
        declared = self.spec.model
        return self.resolve(declared.source, declared.format, declared.sha256, MODEL_SOURCE)

    def model_and_pack(self) -> tuple[ResolvedSource | None, ResolvedSource | None, tuple[StepRun, ...]]:
        """(the model, the prebuilt pack) — either may be None — and their resolve runs."""
        model, model_run = self.model()
        pack_uri = self.spec.build.prebuilt.source
        if model.format is Format.EP_CONTEXT:
            if pack_uri:
                raise BuildError("resolve", f"{model.uri} is itself a prebuilt pack; spec.build.prebuilt.source is "
                                 "for a pack beside a buildable model: drop one of them")
            return None, model, (model_run,)
        if model.format is Format.GENAI:
            raise BuildError("resolve", f"{model.uri}: onnxruntime-genai folders are not built or served yet")
        if not pack_uri:
            return model, None, (model_run,)
        pack, pack_run = self.resolve(pack_uri, Format.EP_CONTEXT, {}, PACK_SOURCE)
        return model, pack, (model_run, pack_run)

    def resolve(self, uri: str, declared: Format, pins: dict[str, str], field: Loc) -> tuple[ResolvedSource, StepRun]:
        started = time.perf_counter()
        # Announced as running: the agent gives reading a source its own (short) deadline.
        self.runner.progress(StepEvent("resolve", StepState.RUNNING, ""))
        context = SourceContext(self.base_dir, self.runner.store, pins, self.spec.model.insecure_skip_digest,
                                cached_only=self.runner.cached_only, roots=self.roots)
        try:
            source = resolve(uri, context, declared)
        except SourceRefused as exc:
            place = f"{self.where(field)}: " if self.where else ""
            raise SourceRefused(f"{place}{'.'.join(map(str, field))}: {exc.message}") from None
        # Sources are read in place (local files, the Hugging Face cache) or from stored downloads: resolving
        # itself stores nothing, so it is always "cached".
        seconds = time.perf_counter() - started
        self.runner.progress(StepEvent("resolve", StepState.CACHED, source.digest, seconds=seconds))
        return source, StepRun("resolve", source.digest, True, seconds)
