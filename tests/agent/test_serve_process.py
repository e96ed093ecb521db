"""`npuctl serve` as a process (issue 27): its /openapi.json describes serve (not the agent's control API), a
browser's preflight for the openai SDK's headers is answered with what was asked within the allowed set, and
/metrics speaks OpenMetrics to a scraper that asks for it, as prometheus_client does."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.agent.harness import free_port, manifest, tiny_model

ORIGIN = "https://app.example"
SDK_HEADERS = "authorization, content-type, x-stainless-lang, x-stainless-package-version, x-stainless-os, " \
              "x-stainless-arch, x-stainless-runtime, x-stainless-runtime-version, x-stainless-retry-count, " \
              "x-stainless-timeout, openai-organization, openai-project"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("serve")
    (folder / "manifests").mkdir()
    tiny_model(folder / "manifests" / "tiny.onnx")
    (folder / "manifests" / "tiny.yaml").write_text(manifest())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (folder / "serve.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "npuctl", "serve", "-f", str(folder / "manifests"),
                                    "--port", str(port), "--cache", str(folder / "cache"), "--cors-origin", ORIGIN],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (folder / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_its_openapi_describes_serve_only(served: str) -> None:
    document = httpx.get(f"{served}/openapi.json").json()
    assert document["info"]["title"] == "npuctl serve"
    assert not [path for path in document["paths"] if path.startswith("/agent/")]
    assert "securitySchemes" not in document["components"]


def test_a_preflight_for_the_sdks_headers_is_answered_with_them(served: str) -> None:
    preflight = httpx.options(f"{served}/v1/embeddings", headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": f"{SDK_HEADERS}, x-made-up"})
    assert preflight.status_code == 204
    allowed = [h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")]
    assert allowed == SDK_HEADERS.split(", "), "every header the SDK sends, and nothing not allowed"
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert preflight.headers["access-control-allow-origin"] == ORIGIN


def test_metrics_negotiate_openmetrics_as_prometheus_asks(served: str) -> None:
    httpx.post(f"{served}/v2/models/tiny/infer", json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [1, 2, 3, 4, 5, 6, 7, 8]}]})
    asked = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75," \
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"  # Prometheus' scrape Accept header
    answer = httpx.get(f"{served}/metrics", headers={"accept": asked})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert "npuctl_requests" in names, sorted(names)
    plain = httpx.get(f"{served}/metrics")
    assert plain.headers["content-type"].startswith("text/plain") and "# EOF" not in plain.text
