"""The package type-checks (mypy with the pydantic plugin, as configured in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy comes with the dev extra")
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "npuctl"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
