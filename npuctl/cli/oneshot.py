"""`npuctl serve`: manifests in, a registry of served models out, building what is missing first.
No watching and no reconcile loop (that is the agent's job); a deployment that fails to build or
load is held as Unavailable with the reason, and the others serve."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from npuctl.artifacts import BuildError, BuildResult, ProgressCallback, Store, artifacts_of, build_deployment
from npuctl.runtime.devices import HostFacts
from npuctl.schema.loader import LoadedDeployment
from npuctl.serve.models import ModelStatus, ServedModel, Unavailable, load_served
from npuctl.serve.registry import ModelRegistry

BUILD_FAILED = "BuildFailed"


def build_and_load(
    loaded: LoadedDeployment,
    *,
    store: Store,
    host: HostFacts | None = None,
    progress: ProgressCallback | None = None,
    on_built: Callable[[str, BuildResult], None] | None = None,
) -> ServedModel:
    """Build (or find in the store) one deployment, then load it where its rules allow."""
    try:
        result = build_deployment(loaded, store=store, progress=progress)
    except BuildError as exc:
        return Unavailable(loaded.deployment, ModelStatus(False, BUILD_FAILED, str(exc)))
    if on_built is not None:
        on_built(loaded.name, result)
    return load_served(loaded.deployment, artifacts_of(result, store.views_dir), host)


def serve_registry(
    deployments: Sequence[LoadedDeployment],
    *,
    store: Store,
    host: HostFacts | None = None,
    progress: ProgressCallback | None = None,
    on_loaded: Callable[[ServedModel], None] | None = None,
    on_built: Callable[[str, BuildResult], None] | None = None,
) -> ModelRegistry:
    """A registry holding every deployment: serving, or Unavailable with its reason. `on_built` gets each
    deployment's build (by deployment name) before it loads."""
    registry = ModelRegistry()
    for loaded in deployments:
        served = build_and_load(loaded, store=store, host=host, progress=progress, on_built=on_built)
        registry.put(served)
        if on_loaded is not None:
            on_loaded(served)
    return registry
