"""What an NPU chat build needs, said before it runs (pre-flight) and when a step's child runs out of memory or
past its deadline (npuctl.artifacts.children, the one runner of every step's child)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from npuctl.artifacts import BuildError, Store, build_deployment, children, facts
from npuctl.artifacts.llm import pack, preflight
from npuctl.artifacts.llm import verify as llm_verify
from npuctl.artifacts.result import StepEvent, StepState
from npuctl.artifacts.sources import gguf as gguf_source
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.steps import Runner
from npuctl.schema.models import Format
from tests.manifests import HUGE, huge_deployment, write_deployment

GREEDY_STAGE = """
import os, signal, time
hoard = bytearray(300 * 2**20)
for at in range(0, len(hoard), 4096):
    hoard[at] = 1  # touched, so resident
time.sleep(1)  # long enough for the parent's sampler to see it
os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer sends
"""


def test_a_build_the_host_cannot_hold_is_refused_before_any_step_naming_the_figures_and_what_to_do(
        tmp_path: Path) -> None:
    deployment = huge_deployment(tmp_path, {"splits": "auto", "window": 64, "contextLength": 2048})
    store = Store(tmp_path / "store")
    events: list[StepEvent] = []
    with pytest.raises(BuildError) as refused:
        build_deployment(deployment, store=store, progress=events.append)
    assert refused.value.step == "resolve"
    message = refused.value.message
    assert "building 70.55B parameters for the NPU needs ~" in message
    assert "GiB of RAM at its peak and this host has" in message and "GiB available" in message
    assert "npuctl build --publish" in message and "prebuilt NPU pack" in message
    assert not list(store.records()), "no step may run"
    shown = [e for e in events if e.step == preflight.STEP and e.state is StepState.RUNNING]
    assert shown and shown[0].message is not None and shown[0].message.startswith(
        "pre-flight for 70.55B parameters: peak RAM ~")


def test_pre_flight_puts_static_shapes_and_compile_far_under_the_models_size(tmp_path: Path) -> None:
    # Llama-3.2-3B's config.json sizes (3.6B parameters counted with its tied embedding once, 3.2B in its layers).
    config = HUGE | {"hidden_size": 3072, "num_attention_heads": 24, "intermediate_size": 8192,
                     "num_hidden_layers": 28, "head_dim": 128, "tie_word_embeddings": True}
    loaded = write_deployment(tmp_path, "llama3b", {
        "model": {"source": "file:/nowhere", "task": "text-generation"}, "precision": "w8a16",
        "targets": ["x-elite"], "generation": {"splits": "auto", "window": 64, "contextLength": 2048}})
    shape = pack.resolve_shape(loaded.deployment, config, "file:/nowhere")
    needs = preflight.estimate(config, tmp_path, shape.graph_bytes)
    gib = {step: figure / 2**30 for step, figure in needs.stage_rss_bytes.items()}
    # llm-static never holds the weights; compile holds one graph, and splits: auto keeps each graph's weights and
    # its layers' KV cache (input and output, uint16 at 2048 tokens: 8 MiB per layer each) under 1 GiB: 4 splits of
    # ~0.66 GiB of weights here (3 without the cache).
    assert shape.splits == 4 and 0.6 < shape.graph_bytes / 2**30 < 0.7
    assert shape.kv_cache_bytes == 2 * 28 * 8 * 128 * 2048 * 2 and needs.kv_cache_bytes == 0
    assert gib["llm-static"] < 1.2
    assert 3.5 < gib["compile"] < 5.5
    # The same model cut in 6 needs less to compile, and no more to make static.
    six = pack.resolve_shape(write_deployment(tmp_path, "six", {
        "model": {"source": "file:/nowhere", "task": "text-generation"}, "precision": "w8a16",
        "targets": ["x-elite"], "generation": {"splits": 6, "window": 64, "contextLength": 2048}}).deployment,
        config, "file:/nowhere")
    cut = preflight.estimate(config, tmp_path, six.graph_bytes).stage_rss_bytes
    assert cut["compile"] < needs.stage_rss_bytes["compile"] and cut["llm-static"] == needs.stage_rss_bytes["llm-static"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX's; Windows reports STATUS_NO_MEMORY")
def llama3b(tmp_path: Path, name: str, generation: dict[str, object], kv_heads: int = 8) -> pack.Shape:
    """Llama-3.2-3B's shape (or with `kv_heads` KV heads) resolved for `generation`."""
    config = HUGE | {"hidden_size": 3072, "num_attention_heads": 24, "intermediate_size": 8192,
                     "num_hidden_layers": 28, "head_dim": 128, "tie_word_embeddings": True,
                     "num_key_value_heads": kv_heads}
    loaded = write_deployment(tmp_path, name, {
        "model": {"source": "file:/nowhere", "task": "text-generation"}, "precision": "w8a16",
        "targets": ["x-elite"], "generation": {"window": 128} | generation})
    return pack.resolve_shape(loaded.deployment, config, "file:/nowhere")


def test_the_kv_cache_is_sized_at_resolve_and_splits_that_cannot_hold_it_are_refused_naming_what_to_do(
        tmp_path: Path) -> None:
    # uint16 at the HTP's graph I/O: 2 x 28 layers x 8 KV heads x 128 x 8192 tokens x 2 bytes = 896 MiB.
    long = llama3b(tmp_path, "long", {"splits": "auto", "contextLength": 8192})
    assert (long.kv_element, long.kv_cache_bytes) == ("uint16", 896 * 2**20)
    # One graph of 7 layers holds 0.7 GiB of weights and 7 x 2 x 32 MiB of KV cache: auto cuts the model in 5.
    assert long.splits == 5
    # 3 splits hold its weights alone (the limit the build had) but not with a cache twice as long.
    with pytest.raises(BuildError) as refused:
        llama3b(tmp_path, "three", {"splits": 3, "contextLength": 16384})
    assert refused.value.step == "resolve" and refused.value.field == ("spec", "generation", "splits")
    assert refused.value.message == (
        "spec.generation.splits 3 puts ~2.2 GiB (0.9 GiB of w8a16 weights and 1.2 GiB of its layers' uint16 KV cache "
        "as input and output at contextLength 16384) in one graph, over QNN's ~2 GB finalize limit (error 1002 when "
        "the NPU loads it): set spec.generation.splits to 7 or more, or auto, or a shorter "
        "spec.generation.contextLength")
    assert llama3b(tmp_path, "three-shorter", {"splits": 3, "contextLength": 8192}).splits == 3
    # With attention on the CPU the cache is not in the graphs: 3 splits hold.
    on_cpu = llama3b(tmp_path, "three-cpu", {"splits": 3, "contextLength": 16384, "attention": "cpu"})
    assert (on_cpu.splits, on_cpu.kv_cache_bytes) == (3, 0)
    # A cache no number of splits holds: without grouped KV heads, one layer's is over the session's limit.
    with pytest.raises(BuildError) as too_long:
        llama3b(tmp_path, "whole", {"splits": "auto", "contextLength": 100_000}, kv_heads=24)
    assert too_long.value.field == ("spec", "generation", "contextLength")
    assert "over one HTP session's ~2 GB: set a shorter spec.generation.contextLength" in too_long.value.message


def test_pre_flight_shows_the_kv_cache() -> None:
    needs = facts.Preflight(parameters=10**9, peak_rss_bytes=7 << 30, stage_rss_bytes={}, disk_bytes=16 * 10**9,
                            seconds=600.0, available_memory_bytes=20 << 30, free_disk_bytes=100 * 10**9,
                            kv_cache_bytes=896 << 20, kv_cache_element="uint16")
    assert needs.summary().endswith("~10 min up to compile; KV cache 896.0 MiB (uint16)")


def test_a_stage_killed_for_memory_is_reported_as_out_of_memory_with_its_peak_and_the_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stage's child process allocates 300 MB and is SIGKILLed, as the kernel does when memory runs out:
    # Python runs sitecustomize.py from PYTHONPATH first thing in every process, the stage's child included.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GREEDY_STAGE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), *sys.path]))
    needs = facts.Preflight(parameters=10**9, peak_rss_bytes=7 << 30, stage_rss_bytes={"llm-quantize": 7 << 30},
                            disk_bytes=16 * 10**9, seconds=600.0, available_memory_bytes=20 << 30,
                            free_disk_bytes=100 * 10**9)
    with pytest.raises(BuildError) as failed:
        pack.run_stage("llm-quantize", facts.LlmQuantize, {"stage": "quantize"}, tmp_path / "out", needs)
    assert failed.value.step == "llm-quantize"
    message = failed.value.message
    assert message.startswith("llm-quantize ran out of memory: peak 0.3 GiB, pre-flight estimated 7.0 GiB")
    assert "20.0 GiB were available when the build started" in message
    assert "npuctl build --publish" in message
    assert "exit -9" not in message


FAILED_ALLOCATION = """
import sys

def refuse(event, args):
    # The check's first import inside its work fails as an allocation does: MemoryError.
    if event == "import" and args[0] == "npuctl.runtime.prompts":
        raise MemoryError()

sys.addaudithook(refuse)
"""


def _hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """`code` runs first thing in every child process: Python runs sitecustomize.py from PYTHONPATH."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), *sys.path]))


NEEDS = facts.Preflight(parameters=10**9, peak_rss_bytes=7 << 30,
                        stage_rss_bytes={"gguf-convert": 2 << 30, "verify-quantized": 4 << 30},
                        disk_bytes=16 * 10**9, seconds=600.0, available_memory_bytes=20 << 30,
                        free_disk_bytes=100 * 10**9)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX's; Windows reports STATUS_NO_MEMORY")
def test_a_gguf_conversion_killed_for_memory_is_reported_as_out_of_memory_with_its_peak_and_the_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf
    import numpy as np

    file = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _hook(tmp_path, monkeypatch, GREEDY_STAGE)
    store = Store(tmp_path / "store")
    source = ResolvedSource(f"file:{file}", file, Format.GGUF, "0" * 64)
    with pytest.raises(BuildError) as failed:
        gguf_source.convert_step(source, Runner(store, lambda event: None, cached_only=False).run, NEEDS)
    assert failed.value.step == "gguf-convert"
    message = failed.value.message
    assert message.startswith("gguf-convert ran out of memory: peak 0.3 GiB, pre-flight estimated 2.0 GiB")
    assert "20.0 GiB were available when the build started" in message and "npuctl build --publish" in message
    assert not list(store.records())


def test_a_verify_check_whose_allocation_fails_is_reported_as_out_of_memory_with_the_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The child catches the MemoryError and reports it as the check's error (its exit code is 0).
    _hook(tmp_path, monkeypatch, FAILED_ALLOCATION)
    with pytest.raises(BuildError) as failed:
        llm_verify.check_quantized(tmp_path / "reference", tmp_path / "weights", tmp_path / "quantized", ["Hello"],
                                   4, tmp_path, NEEDS)
    assert failed.value.step == "verify-quantized"
    message = failed.value.message
    assert message.startswith("verify-quantized ran out of memory: peak 0.")
    assert "pre-flight estimated 4.0 GiB (20.0 GiB were available when the build started)" in message


def test_a_child_past_its_deadline_is_stopped_with_the_processes_it_started_and_the_end_of_its_output_kept(
        tmp_path: Path) -> None:
    # A child that starts a process of its own (its pid written to a file), prints 1 MB and hangs.
    pid_file = tmp_path / "grandchild.pid"
    hang = ("import pathlib, subprocess, sys, time; "
            "left = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"pathlib.Path({str(pid_file)!r}).write_text(str(left.pid)); "
            "sys.stdout.write('x' * 2**20 + 'the end'); sys.stdout.flush(); time.sleep(120)")
    done = children.run("llm-quantize", [sys.executable, "-c", hang], dict(os.environ), deadline_seconds=5.0)
    assert done.timed_out and done.returncode != 0
    assert done.log.endswith("the end") and len(done.log) == children.LOG_TAIL_BYTES
    assert _ended(int(pid_file.read_text())), "the process the child started is stopped with it"
    with pytest.raises(BuildError) as stopped:
        done.check_stopped(None)
    assert stopped.value.step == "llm-quantize"
    assert stopped.value.message.startswith("llm-quantize was stopped at its deadline, after 0 min: ")
    assert stopped.value.message.endswith("the end")


def test_a_child_whose_parent_is_killed_ends_with_it(tmp_path: Path) -> None:
    # An agent (here a small parent) killed mid-build: its step's child, deep in its work, must not run on.
    pid_file = tmp_path / "child.pid"
    work = ("import os, pathlib, time; from npuctl.artifacts import children\n"
            "with children.to_parent():\n"
            f"    pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
            "    time.sleep(120)\n")
    agent = ("import os, sys; from npuctl.artifacts import children; "
             f"children.run('llm-quantize', [sys.executable, '-c', {work!r}], dict(os.environ), 600.0)")
    parent = psutil.Popen([sys.executable, "-c", agent])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _ended(child, grace=0.5), "the child runs while its parent does"
    finally:
        parent.kill()
        parent.wait(30)
    assert _ended(child), "the child ends once its parent is gone"


def _ended(pid: int, grace: float = 10) -> bool:
    """Gone, or a zombie nobody has reaped yet (its parent was killed too): it runs no more. SIGKILL takes
    effect when the process is next scheduled: a few seconds' grace."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
