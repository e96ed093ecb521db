"""Where a deployment's local (`file:`) sources may point, by where its manifest came from.

A manifest the machine's user (or a token holder) put in a manifests folder may read inside its own
folder and the agent config's `modelRoots`. A manifest from a fleet bundle was written by a publisher
who reaches every PC of the fleet: it may read no local file at all, unless its source's
`allowLocalSources` lets it read inside `modelRoots` (never the manifests folder: that holds the
other manifests). `pkg:` sources stay inside their package whoever wrote them (npuctl.artifacts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npuctl.agent.config import AgentConfig

BUNDLE_SUFFIX = ".bundle.yaml"
"""How bundle files are named in the first manifests folder (npuctl.agent.sources writes them)."""


@dataclass(frozen=True)
class SourceRules:
    model_roots: tuple[Path, ...]
    bundle_folder: Path
    """Where bundles are written: a `*.bundle.yaml` there is a bundle's, whichever source wrote it."""
    local_bundles: frozenset[str]
    """Names of the bundle sources allowed local sources (sources[].allowLocalSources)."""

    @classmethod
    def of(cls, config: AgentConfig) -> SourceRules:
        return cls(tuple(config.model_roots), config.manifests[0],
                   frozenset(source.name for source in config.sources if source.allow_local_sources))

    def roots_for(self, manifest: Path) -> tuple[Path, ...]:
        """The folders `file:` sources of the manifest in this file may lead into (links followed)."""
        name = manifest.name
        if name.endswith(BUNDLE_SUFFIX) and manifest.parent.resolve() == self.bundle_folder.resolve():
            # A leftover bundle of a source no longer configured counts as a bundle too.
            return self.model_roots if name.removesuffix(BUNDLE_SUFFIX) in self.local_bundles else ()
        return (manifest.parent, *self.model_roots)
