"""A real agent process over real files and HTTP, and a tiny tensor model it can build in seconds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model:
    source: file:tiny.onnx
    task: tensor
  precision: {precision}
  accuracy:
    threshold: 0.5
  targets: [x-elite]
  serve:
    queueLimit: {queue_limit}
"""


X = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]
"""An input for the tiny model."""


def tiny_model(path: Path, seed: int = 0) -> None:
    """y = relu(x @ W + b) with x: float32[1, 8]: small enough that the HTP simulator compiles it at once."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.uniform(-0.5, 0.5, (8, 8)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.uniform(-0.1, 0.1, (8,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def manifest(name: str = "tiny", precision: str = "w8a16", queue_limit: int = 64) -> str:
    return MANIFEST.format(name=name, precision=precision, queue_limit=queue_limit)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _temporary_root(folder: Path) -> Path:
    """pytest's base temporary folder of this session (pytest-of-USER/pytest-N), or the folder's parent outside pytest."""
    for parent in folder.parents:
        if parent.parent.name.startswith("pytest-of-"):
            return parent
    return folder.parent


class Agent:
    """`npuctl agent` as a user starts it, in its own process."""

    def __init__(self, root: Path, cache: Path, config: Path | None = None, *, remote: bool = False) -> None:
        self.config = config
        self.remote = remote
        """Listen on 0.0.0.0 with --allow-remote (reachable from the network); the test still talks to 127.0.0.1."""
        self.manifests = root / "manifests"
        self.state = root / "state"
        self.cache = cache
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.manifests.mkdir(parents=True, exist_ok=True)

    def start(self) -> Agent:
        self.launch()
        self.wait_live()
        return self

    def launch(self) -> None:
        """Start the process without waiting for it (to start many at once)."""
        env = {k: v for k, v in os.environ.items() if k not in ("NPUCTL_TOKEN", "NPUCTL_AGENT")}
        command = [sys.executable, "-m", "npuctl", "agent", "--manifests", str(self.manifests),
                   "--listen", f"{'0.0.0.0' if self.remote else '127.0.0.1'}:{self.port}", "--state", str(self.state),
                   "--cache", str(self.cache)]
        if self.remote:
            command.append("--allow-remote")
        command += ["--config", str(self.config or self._default_config())]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _default_config(self) -> Path:
        """The tests make their models in pytest's temporary folders, outside the agent's manifests folder: they are
        the agent's model roots, as a user lists the folders that hold their models (a test that checks where
        sources may point passes its own config)."""
        config = self.manifests.parent / "agent-config.yaml"
        config.write_text(f"modelRoots: [{json.dumps(str(_temporary_root(self.manifests)))}]\n", encoding="utf-8")
        return config

    def wait_live(self, timeout: float = 120) -> None:
        self.wait_for(lambda: self._live(), what="the agent to answer /v2/health/live", timeout=timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    def client(self, token: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def status(self, name: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/agent/v1/deployments/{name}", timeout=10)
        return response.json()["status"] if response.status_code == 200 else None

    def events(self, name: str) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/agent/v1/events", params={"name": name}, timeout=10).json()["items"]

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"the agent exited ({self.process.returncode}):\n{self.log.read_text()[-4000:]}")
            try:
                value = condition()
            except httpx.TransportError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-4000:]}")

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_for(lambda: (s := self.status(name)) and s["phase"] == phase and s, f"{name} {phase}", timeout)

    def _live(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/live", timeout=2).status_code == 200


def infer(client: httpx.Client, model: str, values: list[float]) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": values}]}
    return client.post(f"/v2/models/{model}/infer", json=body)
