"""Loading many manifests at once (files and folders named on a command line): every file read, then the names that
two deployments cannot share checked across all of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from npuctl.schema.clashes import without_clashes
from npuctl.schema.loader import LoadResult, load_file, manifest_files


def load_paths(paths: Iterable[Path | str]) -> LoadResult:
    """Load files and directories (recursively, `*.yaml` / `*.yml`). Deployment names and the names they
    are served under must be unique across all of them. Raises FileNotFoundError for a path that does not exist,
    is neither a regular file nor a folder, or is a folder without manifests. Links in a folder are followed
    only to files inside it; a path named here is read wherever it leads."""
    result = LoadResult()
    for path in map(Path, paths):
        files = manifest_files(path)
        if not files:
            raise FileNotFoundError(f"{path}: no manifests (*.yaml, *.yml) in this folder")
        folder = path if path.is_dir() else None
        for file in files:
            one = load_file(file, folder)
            result.files.append(file)
            result.errors.extend(one.errors)
            result.deployments.extend(one.deployments)
    result.deployments = without_clashes(result.deployments, result.errors)
    return result
