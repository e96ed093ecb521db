"""Garbage collection of the artifact store: what no declared deployment uses goes, and so do the work
folders of builders that died."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.facts import Facts
from npuctl.artifacts.pipeline import referenced_keys
from npuctl.artifacts.store import Record, Store
from npuctl.schema.loader import LoadedDeployment

STALE_WORK_SECONDS = 3600
"""A work folder this old belongs to a builder that died (a live build holds its key's lock anyway)."""


@dataclass
class Collection:
    kept: set[str] = field(default_factory=set)
    """Keys of the stored steps some deployment uses."""
    removed: list[Record[Facts]] = field(default_factory=list)
    """The unused steps (removed, or that would be on a dry run)."""
    freed_bytes: int = 0


def collect(store: Store, deployments: Sequence[LoadedDeployment], *, dry_run: bool = False) -> Collection:
    """Remove every stored step that none of `deployments` uses. Raises BuildError, naming the deployment,
    when its steps cannot be worked out (its artifacts would then look unused)."""
    result = Collection()
    for deployment in deployments:
        try:
            result.kept |= referenced_keys(deployment, store=store)
        except BuildError as exc:
            raise BuildError(exc.step, f"{deployment.name}: {exc.message}") from exc
    for record in store.records():
        if record.key in result.kept:
            continue
        result.removed.append(record)
        result.freed_bytes += store.size(record)
        if not dry_run:
            store.remove(record.key)
    if not dry_run:
        store.clean_tmp(max_age_seconds=STALE_WORK_SECONDS)
    return result
