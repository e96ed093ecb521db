"""`npuctl build` and `npuctl cache` as users run them, including a builder killed mid-compile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from npuctl.artifacts import Store, build_deployment
from npuctl.cli import cli
from tests.artifacts.conftest import tiny_model, write_manifest


def npuctl(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "npuctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def test_build_json_output_has_the_documented_shape(tiny_dir: Path) -> None:
    write_manifest(tiny_dir, targets=["x-elite", "x2-elite"])
    cache = tiny_dir / "cache"
    proc = npuctl("build", "-f", str(tiny_dir / "tiny.yaml"), "--target", "x2-elite", "--cache", str(cache),
                  "-o", "json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    data = json.loads(out)
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
