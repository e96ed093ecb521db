"""What applying a manifest would change, before anything changes: for `apply --dry-run` and `diff`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from npuctl.agent.desired import Desired, Keys
from npuctl.schema import LoadedDeployment


@dataclass(frozen=True)
class Change:
    name: str
    action: str
    """create | update | delete | unchanged"""
    effect: str = "none"
    """What the agent will do: build (new artifacts, then load and swap), reload (new sessions from
    the same artifacts), reconfigure (serving options in place), unload, or none."""
    fields: list[dict[str, Any]] = field(default_factory=list)
    """Changed fields: {path, old, new}."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "effect": self.effect, "fields": self.fields}


def plan(incoming: list[LoadedDeployment], file_now: list[str], current: Mapping[str, Desired]) -> list[Change]:
    """Changes if `incoming` replaced the deployments `file_now` names (those declared in the same file)."""
    changes = [_change(new, current.get(new.name)) for new in incoming]
    kept = {new.name for new in incoming}
    changes += [Change(name, "delete", "unload") for name in file_now if name not in kept]
    return changes


def _change(new: LoadedDeployment, old: Desired | None) -> Change:
    if old is None:
        return Change(new.name, "create", "build")
    before = old.deployment.deployment.spec.model_dump(mode="json")
    after = new.deployment.spec.model_dump(mode="json")
    fields = [{"path": f"spec.{path}", "old": a, "new": b} for path, a, b in _diff(before, after)]
    if old.deployment.deployment.metadata != new.deployment.metadata:
        fields.append({"path": "metadata", "old": old.deployment.deployment.metadata.model_dump(mode="json"),
                       "new": new.deployment.metadata.model_dump(mode="json")})
    if not fields:
        return Change(new.name, "unchanged")
    was, now = Keys.of(old.deployment), Keys.of(new)
    effect = ("build" if was.build != now.build else "reload" if was.load != now.load
              else "reconfigure" if was.serve != now.serve else "none")
    return Change(new.name, "update", effect, fields)


def _diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if a == b else [(path, a, b)]
