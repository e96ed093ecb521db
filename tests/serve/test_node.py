"""The openai and ollama npm packages under Node (issue 27), against a real server: openai's chat (whole and
streamed), embeddings and Responses API (whole and streamed); ollama's model listing, chat, generate and embeddings.
`.ci/run` installs them into tests/node; skipped without node or them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

FOLDER = Path(__file__).parent.parent / "node"


def run_node(package: str, script: str, *arguments: str) -> dict[str, Any]:
    """What `script` (under tests/node) printed as JSON, run with `arguments`; skips without node or the package."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 or later)")
    if not (FOLDER / "node_modules" / package / "package.json").is_file():
        pytest.skip(f"the {package} npm package is not installed: npm install --prefix {FOLDER} (.ci/run does)")
    done = subprocess.run([node, str(FOLDER / script), *arguments], capture_output=True, text=True, timeout=120,
                          cwd=FOLDER)
    assert done.returncode == 0, done.stderr
    got: dict[str, Any] = json.loads(done.stdout)
    return got


@pytest.fixture
def url(serve: Serve, tiny_llama: Callable[..., ServedModel], minilm: Callable[..., ServedModel]) -> str:
    return serve(tiny_llama(), minilm()).url


def test_the_openai_npm_package_chats_embeds_and_calls_the_responses_api(url: str) -> None:
    got = run_node("openai", "clients.mjs", url)
    assert got["chat"] and got["streamed"] == got["chat"] and got["dimensions"] == 384
    assert got["response"] and got["deltas"] == got["response"]
    assert got["kinds"][0] == "response.created" and got["kinds"][-1] == "response.incomplete"


def test_the_ollama_npm_package_lists_chats_generates_and_embeds(url: str) -> None:
    got = run_node("ollama", "ollama.mjs", url)
    assert got["models"] == ["minilm", "tiny-llama"] and got["running"] == ["minilm", "tiny-llama"]
    assert "<|assistant|>" in got["template"] and got["capabilities"] == ["completion", "tools"] and got["version"]
    assert got["chat"] and got["streamed"] == got["chat"] and got["streamedDone"] is True
    assert got["chatDone"] == "length" and got["evalCount"] == 8
    assert got["generated"] and got["generatedStream"] == got["generated"] and got["context"] > 8
    reference = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": "a sentence"}).json()
    np.testing.assert_allclose(got["first"], reference["data"][0]["embedding"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["legacy"], reference["data"][0]["embedding"], rtol=1e-4, atol=1e-5)
    assert got["vectors"] == 2 and got["dimensions"] == 384
    assert got["pull"]["name"] == "ResponseError" and got["pull"]["status"] == 400
    assert "npuctl agent" in got["pull"]["error"]
