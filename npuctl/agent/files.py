"""Writing into the agent's folders: manifest file names that stay inside them, and atomic writes."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ya?ml$")
"""A manifest file name: no separators, no leading dot (hidden files are not read), .yaml or .yml."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never a part: temp file + rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
