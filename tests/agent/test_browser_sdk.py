"""The openai npm package in a real browser (Debian's chromium, driven by Playwright) on a page of an allowed origin,
calling `npuctl serve`'s app on another port: the browser preflights the SDK's headers (Authorization,
X-Stainless-*), the server allows them, and the call goes through (issue 27). Skipped without chromium or the
package (`.ci/run` installs both)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from npuctl.serve.http.guards import WebPolicy
from npuctl.serve.models import ServedModel
from tests.agent.test_dashboard import browser  # noqa: F401  (the fixture; its module skips without chromium)
from tests.serve.conftest import Serve, minilm, minilm_artifacts, serve  # noqa: F401  (fixtures)

PACKAGE = Path(__file__).parent.parent / "node" / "node_modules" / "openai"
PAGE = """<!doctype html><script type="module">
import OpenAI from "/openai/index.mjs";
const client = new OpenAI({ baseURL: "%s/v1", apiKey: "unused", dangerouslyAllowBrowser: true, maxRetries: 0 });
client.embeddings.create({ model: "minilm", input: "a sentence" })
  .then(answer => { window.result = answer.data[0].embedding.length; })
  .catch(error => { window.result = String(error); });
</script>"""


class _Files(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[str]:
    """A page on its own origin, with the openai package beside it."""
    if not (PACKAGE / "index.mjs").is_file():
        pytest.skip(f"the openai npm package is not installed: npm install --prefix {PACKAGE.parent.parent}")
    (tmp_path / "openai").symlink_to(PACKAGE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Files, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_openai_sdk_in_a_browser_passes_the_preflight(serve: Serve, minilm: Callable[..., ServedModel],  # noqa: F811
                                                         page_server: str, browser, tmp_path: Path) -> None:  # noqa: F811
    api = serve(minilm(), web=WebPolicy.of(cors_origins=[page_server]))
    (tmp_path / "index.html").write_text(PAGE % api.url)
    page = browser.new_page()
    page.goto(f"{page_server}/index.html")
    page.wait_for_function("() => window.result !== undefined", timeout=30_000)
    assert page.evaluate("() => window.result") == 384
