"""The openai npm package under Node (issue 27), against a real server: chat (whole and streamed), embeddings and
the Responses API (whole and streamed). `.ci/run` installs it into tests/node; skipped without node or it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

FOLDER = Path(__file__).parent.parent / "node"


def test_the_openai_npm_package_chats_embeds_and_calls_the_responses_api(
        serve: Serve, tiny_llama: Callable[..., ServedModel], minilm: Callable[..., ServedModel]) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 or later)")
    if not (FOLDER / "node_modules" / "openai" / "package.json").is_file():
        pytest.skip(f"the openai npm package is not installed: npm install --prefix {FOLDER} (.ci/run does)")
    server = serve(tiny_llama(), minilm())
    done = subprocess.run([node, str(FOLDER / "clients.mjs"), server.url], capture_output=True, text=True,
                          timeout=120, cwd=FOLDER)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["chat"] and got["streamed"] == got["chat"] and got["dimensions"] == 384
    assert got["response"] and got["deltas"] == got["response"]
    assert got["kinds"][0] == "response.created" and got["kinds"][-1] == "response.incomplete"
