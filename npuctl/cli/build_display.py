"""How `npuctl build` shows its steps while they run: a live table on a terminal; a line per event when
stderr is not one (nohup, CI, `| tee`), each written as it happens; with `-o json`, a JSON line per event on
stdout before the result's line."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from npuctl.cli.output import err_console

if TYPE_CHECKING:
    from npuctl.artifacts import StepEvent

_STYLES = {"cached": "dim", "running": "yellow", "done": "green", "fetched": "cyan", "failed": "red"}


class LiveTable:
    """A live table of the build's steps on a terminal's stderr: state, time, how far a running step is."""

    def __init__(self, name: str) -> None:
        from rich.live import Live

        self.name = name
        self.rows: dict[tuple[str, str | None, int | None], tuple[str, str, str]] = {}
        self.live = Live(self._table(), console=err_console, transient=False, refresh_per_second=8)

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._table())
        self.live.__exit__(None, None, None)

    def update(self, event: StepEvent) -> None:
        state = event.state.value
        seconds = f"{event.seconds:.2f}s" if event.seconds is not None else ""
        running = event.running()
        said = running.doing() if running else ""
        self.rows[(event.step, event.target, event.bucket)] = (f"[{_STYLES[state]}]{state}[/]", seconds,
                                                              escape(said))
        if event.message and event.state.value == "done":  # what a step found (the chat build's pre-flight)
            self.live.console.print(f"{event.step}: {escape(event.message)}")
        self.live.update(self._table())

    def _table(self) -> Table:
        table = Table("step", "target", "bucket", "state", "time", "progress", title=f"build {self.name}",
                      title_justify="left")
        for (step, target, bucket), (state, seconds, running) in self.rows.items():
            table.add_row(step, target or "", "" if bucket is None else str(bucket), state, seconds, running)
        return table


class Lines:
    """A line on stderr per event, as it happens: what a log file or a CI console can show."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, event: StepEvent) -> None:
        state = event.state.value
        seconds = f"{event.seconds:.1f} s" if event.seconds is not None else ""
        running = event.running()
        if running is not None:
            text = running.doing()
        elif state == "failed":
            text = f"failed after {seconds}: {event.message}"
        elif state == "fetched":
            text = f"fetched from {event.message} in {seconds}"
        else:
            text = f"{state} in {seconds}" if state == "done" else state
            if state == "done" and event.message:  # what a step found (the chat build's pre-flight)
                text += f": {event.message}"
        click.echo(f"{self.name}: {event.where}: {text}", err=True)


class JsonLines:
    """`-o json`: a JSON object per event, one a line, written at once to `fd` (the process's stdout, which
    native libraries are kept off while the build runs)."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd

    def update(self, event: StepEvent) -> None:
        data = (json.dumps({"event": "step", "deployment": self.name} | event.as_dict()) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]
