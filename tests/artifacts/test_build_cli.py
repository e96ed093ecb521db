"""`npuctl build` and `npuctl cache` as users run them, including a builder killed mid-compile."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import SimpleQueue
from typing import IO

import pytest
from click.testing import CliRunner

from npuctl.artifacts import Store, build_deployment
from npuctl.cli import cli
from tests.artifacts.conftest import tiny_model, write_manifest


def npuctl(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "npuctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def lines_as_they_come(proc: subprocess.Popen[str], stream: IO[str], timeout: float = 120) -> list[tuple[str, bool]]:
    """Each line of `stream` when it came, and whether `proc` was still running then; then waits for `proc`."""
    lines: SimpleQueue[str | None] = SimpleQueue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        seen.append((line.rstrip("\n"), proc.poll() is None))
    proc.wait(timeout=30)
    return seen


def test_build_json_output_streams_step_events_then_the_documented_result(tiny_dir: Path) -> None:
    write_manifest(tiny_dir, targets=["x-elite", "x2-elite"])
    cache = tiny_dir / "cache"
    with open(tiny_dir / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "npuctl", "build", "-f", str(tiny_dir / "tiny.yaml"), "--target",
                                 "x2-elite", "--cache", str(cache), "-o", "json"], stdout=subprocess.PIPE, stderr=err,
                                text=True)
        assert proc.stdout is not None
        lines = lines_as_they_come(proc, proc.stdout)
        err.seek(0)
        assert proc.returncode == 0, err.read()
    # One JSON object a line: the steps' events as they happen, then the result (the last line).
    *events, (last, _) = [(json.loads(line), running) for line, running in lines]
    assert all(e["event"] == "step" and e["deployment"] == "tiny" for e, _ in events)
    assert all(set(e) == {"event", "deployment", "step", "state", "key", "target", "bucket", "seconds", "message",
                          "progress", "preflight"} for e, _ in events)
    quantize = [(e["state"], e["progress"], running) for e, running in events if e["step"] == "quantize"]
    assert quantize[0][:2] == ("running", None) and quantize[-1][0] == "done", quantize
    reports = [(p, running) for state, p, running in quantize[1:-1]]
    assert reports and all(p["unit"] == "calibration samples" and 1 <= p["done"] <= p["total"] for p, _ in reports)
    assert all(running for _, running in reports), "progress is written while the build runs, not at its end"
    data = last
    assert data["deployment"] == "tiny"
    (artifact,) = data["artifacts"]
    assert set(artifact) == {"target", "soc_model", "precision", "bucket", "origin", "compatibility", "files",
                             "accuracy", "npu_coverage", "steps"}
    assert artifact["origin"] == "local" and artifact["compatibility"].split(":")[5] == "88"
    assert [s["uri"] for s in data["sources"]] == ["file:tiny.onnx"]
    assert (artifact["target"], artifact["soc_model"], artifact["precision"], artifact["bucket"]) == ("x2-elite", 88, "w8a16", 8)
    assert [Path(f["path"]).name for f in artifact["files"]] == ["model_ctx.onnx", "model_ctx_qnn.bin"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in artifact["files"])
    assert set(artifact["accuracy"]) == {"metric", "value", "threshold"}
    assert 0 <= artifact["npu_coverage"] <= 1
    assert [s["name"] for s in artifact["steps"]][-3:] == ["quantize", "compile", "verify"]
    assert all(set(s) == {"name", "key", "cached", "seconds"} for s in artifact["steps"])


def test_text_output_through_a_pipe_shows_each_step_as_it_happens(tiny_dir: Path) -> None:
    # stderr is a pipe, not a terminal (as under nohup, CI or `| tee`): a line per event, each as it happens.
    write_manifest(tiny_dir)
    proc = subprocess.Popen([sys.executable, "-m", "npuctl", "build", "-f", str(tiny_dir / "tiny.yaml"), "--cache",
                             str(tiny_dir / "cache")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = [(line, running) for line, running in lines_as_they_come(proc, proc.stderr) if line.startswith("tiny: ")]
    assert proc.returncode == 0, lines
    said = [line for line, _ in lines]
    calibrating = next(i for i, line in enumerate(said)
                       if re.fullmatch(r"tiny: quantize 8: \d+/24 calibration samples, calibrating, [\d.]+ s", line))
    assert said.index("tiny: quantize 8: running") < calibrating < said.index("tiny: compile x-elite/8: running")
    assert lines[calibrating][1], "the line came while the build still ran"
    assert re.fullmatch(r"tiny: verify x-elite/8: done in [\d.]+ s", said[-1]), said


def test_build_failure_exits_1_with_the_reason(tiny_dir: Path) -> None:
    write_manifest(tiny_dir, accuracy={"threshold": 1e-9, "samples": 1})
    result = CliRunner().invoke(cli, ["build", "-f", str(tiny_dir / "tiny.yaml"), "--cache", str(tiny_dir / "c")])
    assert result.exit_code == 1
    assert "max_abs_error" in result.output and "above the allowed 1e-09" in result.output


def test_flipped_byte_is_reported_by_cache_verify_and_rebuilt(tiny_dir: Path, store: Store) -> None:
    loaded = write_manifest(tiny_dir)
    (artifact,) = build_deployment(loaded, store=store).artifacts
    binary = artifact.context_binary
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))

    result = CliRunner().invoke(cli, ["cache", "verify", "--cache", str(store.root)])
    assert result.exit_code == 1
    assert f"{artifact.context_model.parent.name[:12]} compile: model_ctx_qnn.bin has sha256" in result.output

    rebuilt = build_deployment(loaded, store=store)
    # Verify re-runs only if the recompiled binary differs from the first one.
    assert [s.name for s in rebuilt.steps if not s.cached][0] == "compile"
    assert store.verify() == []
    assert CliRunner().invoke(cli, ["cache", "verify", "--cache", str(store.root)]).exit_code == 0


def test_cache_ls_and_gc(tiny_dir: Path, store: Store) -> None:
    build_deployment(write_manifest(tiny_dir), store=store)
    build_deployment(write_manifest(tiny_dir, precision="w8a8"), store=store)
    listed = CliRunner().invoke(cli, ["cache", "ls", "--cache", str(store.root), "-o", "json"])
    assert sorted(r["step"] for r in json.loads(listed.output)).count("compile") == 2
    # The manifest now says w8a8: the w8a16 quantize/compile/verify are garbage.
    dry = CliRunner().invoke(cli, ["cache", "gc", str(tiny_dir / "tiny.yaml"), "--cache", str(store.root), "--dry-run"])
    assert dry.exit_code == 0 and dry.output.count("would remove") == 3
    assert len(store.records()) == 9
    CliRunner().invoke(cli, ["cache", "gc", str(tiny_dir / "tiny.yaml"), "--cache", str(store.root)])
    assert len(store.records()) == 6
    assert build_deployment(write_manifest(tiny_dir, precision="w8a8"), store=store).all_cached


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_sigkill_during_compile_leaves_nothing_visible_and_the_next_build_completes(tmp_path: Path) -> None:
    # fp16 skips quantization, and 300 layers make compiling take long enough (~0.7 s) to be caught in the act.
    tiny_model(tmp_path / "tiny.onnx", hidden=128, layers=300)
    loaded = write_manifest(tmp_path, precision="fp16", shapes={"sequenceLengths": [64]})
    store = Store(tmp_path / "store")
    proc = npuctl("build", "-f", str(loaded.file), "--cache", str(store.root), "-o", "json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        committed = {r.step for r in store.records()}
        if "preprocess" in committed and store.tmp_dir.is_dir() and any(store.tmp_dir.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the build ended before compile could be interrupted"
    assert {r.step for r in store.records()} == {"static-shapes", "npu-fixes", "preprocess"}
    assert store.verify(drop=False) == []

    result = build_deployment(loaded, store=store)
    assert [s.name for s in result.steps if not s.cached] == ["compile", "verify"]
    assert result.artifacts[0].context_binary.is_file()
    assert store.clean_tmp() and list(store.tmp_dir.iterdir()) == []
