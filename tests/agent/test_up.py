"""`npuctl up` as the README's first command uses it: the default MiniLM deployment comes up Ready,
the printed curl line works, and a store that already holds the build is adopted without building."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

from npuctl.artifacts import BuildResult, Store
from tests.agent.harness import free_port
from tests.conftest import minilm_manifest


def test_up_serves_the_default_model_from_an_adopted_store(
    tmp_path: Path, minilm_build: BuildResult, minilm_store: Store
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    minilm_manifest(folder, serve={"name": "all-minilm-l6-v2"})
    port = free_port()
    log = tmp_path / "up.log"
    command = [sys.executable, "-m", "npuctl", "up", str(folder), "--listen", f"127.0.0.1:{port}",
               "--state", str(tmp_path / "state"), "--cache", str(minilm_store.root)]
    env = {**os.environ, "COLUMNS": "200"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 600
        while "curl -s" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "minilm is Ready" in text, text
        assert "StepDone" not in text, f"the store held the build; nothing should run:\n{text}"
        assert re.search(r"built for x-elite \(soc 60, w8a16, seq 128\): cosine 0\.9\d+", text), text
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl -s"))
        args = shlex.split(curl)
        url, body = args[2], json.loads(args[args.index("-d") + 1])
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == 200, response.text
        vector = response.json()["data"][0]["embedding"]
        assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1) < 1e-3
        while "dashboard: http" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        dashboard = next(line.split()[1] for line in log.read_text().splitlines()
                         if line.strip().startswith("dashboard: "))
        assert dashboard == f"http://127.0.0.1:{port}/"
        page = httpx.get(dashboard, headers={"Accept": "text/html"}, timeout=10)
        assert "dashboard.js" in page.text, "beside the curl line, the dashboard's URL"
    finally:
        process.terminate()
        process.wait(30)
