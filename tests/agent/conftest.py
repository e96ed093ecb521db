"""Fixtures: a real agent process in a temporary folder, sharing one artifact store per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.harness import Agent, tiny_model


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact store for the agent tests: what one test built, another adopts (as on a real PC)."""
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture
def agent(tmp_path: Path, agent_cache: Path) -> Iterator[Agent]:
    running = Agent(tmp_path, agent_cache)
    tiny_model(running.manifests / "tiny.onnx")
    yield running
    running.stop()
