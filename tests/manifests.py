"""Writing test manifests: JSON is YAML, so a dict written as JSON is a manifest file the loader reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npuctl.schema import LoadedDeployment, load_file


def write_deployment(folder: Path, name: str, spec: dict[str, Any]) -> LoadedDeployment:
    """Write `folder/<name>.yaml` holding a ModelDeployment with `spec`, and load it as the agent would."""
    manifest = {"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": spec}
    file = folder / f"{name}.yaml"
    file.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    loaded = load_file(file)
    assert loaded.ok, loaded.errors
    return loaded.deployments[0]
