"""The AI Hub builder through the real `qai_hub` client. AI Hub can't be reached from here: the client's HTTP
calls go to a fake AI Hub on 127.0.0.1 (tests/artifacts/fake_aihub.py) that follows the same protobuf API; the
client itself is unmodified. Cases: success (then verified locally on the simulator), 401, 429 then success,
FAILED job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("qai_hub")

import onnx  # noqa: E402

from npuctl.artifacts import BuildError, Store, build_deployment, graphs  # noqa: E402
from npuctl.artifacts.aihub import POLL_SECONDS, RATE_LIMIT_DELAYS, Credentials, Job, compile_on_aihub  # noqa: E402
from tests.artifacts.conftest import write_manifest  # noqa: E402
from tests.artifacts.fake_aihub import TOKEN, FakeHub, serve  # noqa: E402

X_ELITE = "Snapdragon X Elite CRD"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import qai_hub.util.session as session

    # qai-hub retries 429s inside its transport with jittered backoff of up to 10 s; zero it so the test
    # sees npuctl's own retry (which sleeps through an injected clock) without waiting.
    monkeypatch.setattr(session, "BACKOFF_FACTOR", 0)
    monkeypatch.setattr(session, "MAX_WAIT", 0)
    fake = FakeHub()
    server = serve(fake)
    yield fake
    server.shutdown()


def credentials(hub: FakeHub, token: str = TOKEN) -> Credentials:
    return Credentials(token=token, api_url=hub.base)


@pytest.fixture
def static_tiny(tiny_dir: Path) -> Path:
    """The tiny model with static shapes, as the pipeline uploads it (the HTP needs every size known)."""
    model = graphs.make_static(onnx.load(str(tiny_dir / "tiny.onnx")), 1, 8)
    onnx.save(model, str(tiny_dir / "static.onnx"))
    return tiny_dir / "static.onnx"


def test_success_is_stored_like_a_local_build_and_verified_here(hub: FakeHub, tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir, build={"strategy": "aihub"}, targets=["x-elite", "x2-elite"])
    events = []
    result = build_deployment(loaded, store=store, aihub_credentials=credentials(hub), progress=events.append)
    assert [(a.target, a.soc_model, a.origin) for a in result.artifacts] == [
        ("x-elite", 60, "aihub"), ("x2-elite", 88, "aihub")]
    for artifact in result.artifacts:
        assert artifact.accuracy is not None and artifact.accuracy.value <= 0.05  # measured here, on the simulator
        assert artifact.context_model.name == "model_ctx.onnx" and artifact.context_binary.is_file()
        assert artifact.compatibility == f"v2:6:2.51.0:5.51.0:0:{artifact.soc_model}:0:0"
    assert [s.name for s in result.steps if not s.cached][-4:] == ["aihub-compile", "verify", "aihub-compile", "verify"]
    assert hub.options == ["--target_runtime precompiled_qnn_onnx --qairt_version 2.51"] * 2
    assert any(e.message and "submitted" in e.message for e in events)
    again = build_deployment(loaded, store=store, aihub_credentials=credentials(hub))
    assert again.all_cached and len(hub.jobs) == 2  # stored: no second job


def test_a_bad_token_is_a_clear_error_without_the_token(hub: FakeHub, tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir, build={"strategy": "aihub"})
    with pytest.raises(BuildError, match=r"AI Hub refused the API token \(401\)") as refused:
        build_deployment(loaded, store=store, aihub_credentials=credentials(hub, "wrong-secret"))
    assert "wrong-secret" not in str(refused.value)
    assert not [r for r in store.records() if r.step == "aihub-compile"]


def test_429_is_retried_with_backoff_then_succeeds(hub: FakeHub, tmp_path: Path, static_tiny: Path) -> None:
    hub.rate_limit_job_posts = 8  # more than qai-hub's own transport retries (7 tries)
    hub.polls_before_done = 1
    slept: list[float] = []
    said: list[str] = []
    (tmp_path / "out").mkdir()
    details = compile_on_aihub(static_tiny, tmp_path / "out", Job(X_ELITE, "--target_runtime precompiled_qnn_onnx"),
                               credentials=credentials(hub), report=said.append, sleep=slept.append)
    assert slept == [RATE_LIMIT_DELAYS[0], POLL_SECONDS]
    assert any("rate-limited" in line and "429" in line for line in said)
    assert any("OPTIMIZING_MODEL" in line for line in said)
    assert details.device == X_ELITE and (tmp_path / "out" / "model_ctx_qnn.bin").is_file()


def test_429_without_end_gives_up_after_the_last_delay(hub: FakeHub, tmp_path: Path, tiny_dir: Path) -> None:
    hub.rate_limit_job_posts = 10_000
    slept: list[float] = []
    with pytest.raises(BuildError, match=r"kept answering 429 .* 5 retries over 240 s; try again later"):
        compile_on_aihub(tiny_dir / "tiny.onnx", tmp_path, Job(X_ELITE, ""), credentials=credentials(hub),
                         sleep=slept.append)
    assert slept == list(RATE_LIMIT_DELAYS)


def test_a_failed_job_reports_its_reason(hub: FakeHub, tmp_path: Path, static_tiny: Path) -> None:
    hub.fail_jobs = "Compilation failed: QNN_DSP_VERSION_MISMATCH"
    with pytest.raises(BuildError, match=r"AI Hub compile job j1 for Snapdragon X Elite CRD failed: "
                                         r"Compilation failed: QNN_DSP_VERSION_MISMATCH \(.*/jobs/j1/\)"):
        compile_on_aihub(static_tiny, tmp_path, Job(X_ELITE, ""), credentials=credentials(hub),
                         sleep=lambda seconds: None)
