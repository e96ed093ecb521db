"""Progress inside a step: a child process's reports reach the step's caller while the child still runs,
through the runner's rate limit; what a child prints is capped."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from npuctl.artifacts import Store, children, facts, progress
from npuctl.artifacts.progress import Progress, Throttle
from npuctl.artifacts.result import StepEvent, StepState
from npuctl.artifacts.steps import Runner

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from npuctl.artifacts import children, progress

    go_on = Path(sys.argv[1])
    with children.to_parent():
        progress.report(1, 3, "graphs", "compiling")
        # Only the parent, once it has the report above, lets this child go on: it is relayed while we run.
        deadline = time.monotonic() + 60
        while not go_on.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        progress.report(3, 3, "graphs", "compiling")
        print("x" * {line}, file=sys.stderr)
    sys.exit(0 if go_on.exists() else 3)
""")


def test_a_childs_reports_reach_the_step_while_it_runs(tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    got: list[tuple[Progress, str | None]] = []

    def heard(report: Progress, message: str | None) -> None:
        got.append((report, message))
        go_on.touch()

    script = CHILD.format(line=3 * children.LOG_TAIL_BYTES)
    with progress.reporting(heard):
        done = children.run("compile", [sys.executable, "-c", script, str(go_on)],
                            os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}, deadline_seconds=120)
    assert done.returncode == 0, done.tail()
    assert got == [(Progress(1, 3, "graphs"), "compiling"), (Progress(3, 3, "graphs"), "compiling")]
    # Three times the cap printed on one line: the end of it is kept, LOG_TAIL_BYTES.
    assert len(done.log) == children.LOG_TAIL_BYTES and done.log.endswith("x\n")


def test_damaged_and_oversized_report_lines_are_skipped_and_a_partial_line_waits(tmp_path: Path) -> None:
    file = tmp_path / "progress.jsonl"
    file.write_text('{"done": 1, "total": 4, "unit": "layers", "message": null}\n'
                    'not json\n'
                    '{"done": "2", "total": 4, "unit": "layers", "message": null}\n'
                    f'{{"done": 3, "total": 4, "unit": "{"l" * children._LINE_CAP}", "message": null}}\n'
                    '{"done": 4, "total": 4, "unit": "lay')
    got: list[Progress] = []
    relay = children._Relay(file)
    with progress.reporting(lambda report, _: got.append(report)):
        relay.forward()
        assert got == [Progress(1, 4, "layers")]
        with file.open("a") as more:
            more.write('ers", "message": "saving"}\n')
        relay.forward()
    assert got == [Progress(1, 4, "layers"), Progress(4, 4, "layers")]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_lets_one_report_a_second_through_and_always_a_new_phase_or_the_last() -> None:
    clock = _Clock()
    throttle = Throttle(clock=clock)
    passed = []
    for step, (done, unit, message) in enumerate([(1, "samples", "calibrating"), (2, "samples", "calibrating"),
                                                  (3, "samples", "calibrating"), (0, "graphs", "compiling"),
                                                  (1, "graphs", "compiling"), (4, "graphs", "compiling")]):
        clock.now += 0.3
        if step == 2:
            clock.now += 1.0
        if throttle.passes(Progress(done, 4, unit), message):
            passed.append((done, unit))
    assert passed == [(1, "samples"), (3, "samples"), (0, "graphs"), (4, "graphs")]


def test_the_runner_turns_a_steps_reports_into_running_events_between_its_start_and_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[StepEvent] = []
    # The clock stands still: of a hundred reports, only those the throttle always lets through reach the caller.
    monkeypatch.setattr(progress, "Throttle", lambda: Throttle(clock=lambda: 100.0))

    def work(out: Path) -> facts.LlmQuantize:
        for sample in range(1, 101):
            progress.report(sample, 100, "calibration samples", "calibrating")
        (out / "model.onnx").write_bytes(b"quantized")
        return facts.LlmQuantize(weights="uint8", activations="uint16", calibration_texts=100)

    runner = Runner(Store(tmp_path / "store"), events.append, cached_only=False)
    runner.run(facts.LlmQuantize, {"model": "m"}, {}, work)
    states = [(e.state, e.progress) for e in events]
    assert states == [(StepState.RUNNING, None), (StepState.RUNNING, Progress(1, 100, "calibration samples")),
                      (StepState.RUNNING, Progress(100, 100, "calibration samples")), (StepState.DONE, None)]
    assert events[1].running() is not None and events[1].message == "calibrating"
    progress.report(1, 1, "calibration samples")  # outside a step: goes nowhere
    assert len(events) == 4


def test_a_process_the_child_left_holding_its_output_does_not_hold_the_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(children, "DRAIN_SECONDS", 0.5)
    script = ("import subprocess, sys; "
              "left = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              "print(left.pid, flush=True)")
    done = children.run("compile", [sys.executable, "-c", script], dict(os.environ), deadline_seconds=120)
    left = int(done.log.split()[0])
    try:
        assert done.returncode == 0
        os.kill(left, 0)  # the process it started still runs, with the pipes open: `run` did not wait for it
    finally:
        os.kill(left, signal.SIGTERM)
