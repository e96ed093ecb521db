"""Build pipeline: from a model source to verified NPU context binaries in a content-addressed store.

Contract with the runtime, the agent and the CLI (keep it stable):

    build_deployment(deployment: ModelDeployment | LoadedDeployment, *, store: Store | None = None,
                     base_dir: Path | None = None, targets: Sequence[str] | None = None,
                     progress: ProgressCallback | None = None, cached_only: bool = False) -> BuildResult

    BuildResult: deployment, task, precision,
        cpu_model   dynamic-shape fp32 ONNX, served by the CPU EP (never the static NPU graphs)
        model_dir   tokenizer.json, config.json, modules.json, 1_Pooling/config.json, ...
        tokenizer   the tokenizer.json to use, or None
        artifacts   NpuArtifact per (target, bucket): target, soc_model, htp_arch, precision, batch, bucket,
                    context_model (`*_ctx.onnx`, its `.bin` beside it), context_binary, qdq_model (static QDQ,
                    CPU fallback of a quantized model; None for fp16), static_model, accuracy
                    (metric, value, threshold, mean, samples), npu_coverage, qnn_sdk, files, steps
        steps       every StepRun (name, key, cached, seconds)
        artifact(target, bucket), for_soc(soc_model), all_cached, as_dict() (the `build -o json` shape)

A fully built deployment returns from `build_deployment` without running a step (files are re-hashed);
`cached_only=True` guarantees that, raising NotBuiltError instead of building. Errors: BuildError
(AccuracyError, NotBuiltError). The store: Store(root=None) (default $NPUCTL_CACHE or the user data dir).
No printing here: progress goes through the callback as StepEvents.
"""

from npuctl.build.errors import AccuracyError, BuildError, NotBuiltError
from npuctl.build.pipeline import build_deployment, step_key
from npuctl.build.result import (
    AccuracyResult,
    BuildResult,
    NpuArtifact,
    ProgressCallback,
    StepEvent,
    StepRun,
    StepState,
)
from npuctl.build.sources import ResolvedSource, register_resolver, resolve
from npuctl.build.store import Problem, Record, Store, StoredFile, default_root

__all__ = [
    "AccuracyError",
    "AccuracyResult",
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
    "register_resolver",
    "resolve",
    "step_key",
]
