"""Build pipeline: from a model source to verified NPU context binaries in a content-addressed store.

Where to read what the runtime, the agent and the CLI rely on (the signatures live there, not here):

- `pipeline.build_deployment` builds (or finds) a deployment's artifacts; `pipeline.survey` and
  `pipeline.referenced_keys` say how far one is built without running anything.
- `result.BuildResult` is what a build returns (`as_dict` is the `npuctl build -o json` shape); each
  `result.NpuArtifact` reads its target, compatibility and accuracy from the typed facts of its steps, and
  `NpuArtifact.status` is what status shows; `result.artifacts_of` is what the runtime loads.
- `facts` holds the model of what each step records; `steps.Runner` runs a step through the `store.Store`
  (one folder per step key, its `record.json` holding the facts under `details`), or fetches it from a
  published store (`published/`).
- Errors: `errors.BuildError`, with `AccuracyError` and `NotBuiltError`.

Folders by concern: `sources/` (`file:`, `pkg:`, `hf:`, `https:`, GGUF, prebuilt packs), `encoder/`, `seq2seq/`,
`llm/`, `published/`, `oci/`. No printing here: progress goes through a callback as `result.StepEvent`s.
"""

from npuctl.artifacts.errors import AccuracyError, BuildError, NotBuiltError
from npuctl.artifacts.pipeline import build_deployment
from npuctl.artifacts.result import (
    BuildResult,
    NpuArtifact,
    ProgressCallback,
    StepEvent,
    StepRun,
    StepState,
    artifacts_of,
)
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.sources.resolve import resolve
from npuctl.artifacts.steps import step_key
from npuctl.artifacts.store import Problem, Record, Store, StoredFile, default_root

__all__ = [
    "AccuracyError",
    "BuildError",
    "BuildResult",
    "NotBuiltError",
    "NpuArtifact",
    "Problem",
    "ProgressCallback",
    "Record",
    "ResolvedSource",
    "Store",
    "StepEvent",
    "StepRun",
    "StepState",
    "StoredFile",
    "build_deployment",
    "default_root",
    "resolve",
    "step_key",
    "artifacts_of",
]
