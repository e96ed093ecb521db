"""Build pipeline: from a model source to verified NPU context binaries in a content-addressed store.

Contract with the runtime, the agent and the CLI (keep it stable):

    build_deployment(deployment: ModelDeployment | LoadedDeployment, *, store: Store | None = None,
                     base_dir: Path | None = None, targets: Sequence[str] | None = None,
                     progress: ProgressCallback | None = None, cached_only: bool = False,
                     for_soc: int | None = None, aihub_credentials: aihub.Credentials | None = None,
                     published: Sequence[str] = ()) -> BuildResult

    BuildResult: deployment, task, precision,
        cpu_model   dynamic-shape fp32 ONNX, served by the CPU EP (never the static NPU graphs); None for a
                    prebuilt pack without a buildable model
        sources     ResolvedSource per source read (uri, digest, revision: the commit an hf: branch resolved to)
        model_dir   tokenizer.json, config.json, modules.json, 1_Pooling/config.json, ...
        tokenizer   the tokenizer.json to use, or None
        artifacts   NpuArtifact per (target, bucket): target, soc_model, htp_arch, precision, batch, bucket,
                    context_model (`*_ctx.onnx`, its `.bin` beside it), context_binary, qdq_model (static QDQ,
                    CPU fallback of a quantized model; None for fp16), static_model, accuracy
                    (metric, value, threshold, mean, samples; None for packs), npu_coverage, qnn_sdk, files, steps,
                    origin ("local" | "aihub" | "prebuilt"), compatibility (ep_compatibility_info)
        steps       every StepRun (name, key, cached, seconds)
        all_cached, as_dict() (the `build -o json` shape)

Sources: file:, pkg:, hf: (huggingface_hub cache, offline with HF_HUB_OFFLINE=1), https: (sha256-pinned,
stored); spec.model.sha256 pins are checked for every scheme. build.strategy: local (QNN EP here), aihub
(Qualcomm AI Hub compile jobs), prebuilt (EPContext packs only), auto (a pack's binary per target when it has
one, else compile locally). for_soc: an agent's device SoC (only its targets; compiled for it when undeclared).

Published stores (npuctl.artifacts.published.publish: `publish(results, store, dest)` writes the layout; `published=` folders or
http(s) URLs are asked for each missing step by key before it runs, files verified by sha256, StepState.FETCHED).

A fully built deployment returns from `build_deployment` without running a step (files are re-hashed);
`cached_only=True` guarantees that, raising NotBuiltError instead of building. Errors: BuildError
(AccuracyError, NotBuiltError). The store: Store(root=None) (default $NPUCTL_CACHE or the user data dir).
No printing here: progress goes through the callback as StepEvents.
"""

from npuctl.artifacts.errors import AccuracyError, BuildError, NotBuiltError
from npuctl.artifacts.pipeline import build_deployment
from npuctl.artifacts.steps import step_key
from npuctl.artifacts.result import (
    AccuracyResult,
    BuildResult,
    NpuArtifact,
    ProgressCallback,
    StepEvent,
    StepRun,
    StepState,
    artifacts_of,
)
from npuctl.artifacts.sources.resolve import ResolvedSource, register_resolver, resolve
from npuctl.artifacts.store import Problem, Record, Store, StoredFile, default_root

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
    "artifacts_of",
]
