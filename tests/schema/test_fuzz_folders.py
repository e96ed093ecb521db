"""Manifest fuzzing, issue 26: manifest folders whose entries are not regular files (devices, FIFOs, sockets,
folders, dangling links, loops, links in and out), through the loader and `npuctl validate`; and errors that
quote a bounded excerpt of a file. The text fuzzers are in test_fuzz.py, whose helpers these share.

Default run: 20 folders. `NPUCTL_FUZZ=full`: 1,000."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from npuctl.cli import cli
from npuctl.schema import load_text
from npuctl.schema.loader import MAX_FILE_BYTES
from tests.fuzzing import MANIFEST_CASES, fuzz_settings
from tests.schema.test_fuzz import PLACED, VALID, _limit_memory

_garbage_dir = Path(tempfile.mkdtemp(prefix="npuctl-fuzz-folders-"))


# -- issue 26: entries of a manifest folder that are not regular files ----------------------------------------
# Links are followed only to files inside the folder; everything else that is not a regular file is refused
# by name, before it is opened, with the reason at file:1:1. A FIFO would block the read in open() itself,
# a device would never end: each property runs under a deadline, so a hang fails instead of stalling.

OUTSIDE_LINE = "outside-only-line-9f2c: 1"
ENTRY_KINDS = {
    "manifest": None, "link-in": None, "folder-named-yaml": "",
    "dev-zero": "link out of the manifest folder", "dev-null": "link out of the manifest folder",
    "fifo-link-out": "link out of the manifest folder", "link-out": "link out of the manifest folder",
    "link-out-folder": "link out of the manifest folder", "fifo": "not a regular file (a FIFO)",
    "fifo-link-in": "not a regular file (a FIFO behind a link)",
    "folder-link-in": "not a regular file (a folder behind a link)", "dangling": "leads nowhere",
    "loop": "loop of symbolic links", "socket": "not a regular file (a socket)",
}
"""Each kind of entry -> what its error says (None: it declares a deployment; '': no error, it is searched)."""


def _make_entry(folder: Path, outside: Path, index: int, kind: str) -> Path:
    import os
    import socket

    entry = folder / f"e{index}-{kind}.yaml"
    text = VALID.replace("name: fuzz", f"name: fuzz{index}").replace("aliases: [a, b]", "aliases: []")
    inside = folder / "data"
    inside.mkdir(exist_ok=True)
    if kind == "manifest":
        entry.write_text(text)
    elif kind == "link-in":
        (inside / f"real{index}.txt").write_text(text)
        entry.symlink_to(Path("data") / f"real{index}.txt")
    elif kind == "folder-named-yaml":
        entry.mkdir()
    elif kind in ("dev-zero", "dev-null"):
        entry.symlink_to(f"/dev/{kind[4:]}")
    elif kind == "fifo":
        os.mkfifo(entry)
    elif kind == "fifo-link-in":
        os.mkfifo(inside / f"fifo{index}")
        entry.symlink_to(Path("data") / f"fifo{index}")
    elif kind == "fifo-link-out":
        os.mkfifo(outside / f"fifo{index}")
        entry.symlink_to(outside / f"fifo{index}")
    elif kind == "link-out":
        entry.symlink_to(outside / "secret.yaml")
    elif kind == "link-out-folder":
        entry.symlink_to(outside)
    elif kind == "folder-link-in":
        entry.symlink_to("data")
    elif kind == "dangling":
        entry.symlink_to(f"gone{index}.yaml")
    elif kind == "loop":
        entry.symlink_to(f"e{index}-loop.yaml")
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(entry))
    return entry


def _hostile_folder(kinds: list[str]) -> tuple[Path, dict[Path, str | None]]:
    base = Path(tempfile.mkdtemp(dir=_garbage_dir))
    folder, outside = base / "manifests", base / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.yaml").write_text(f"{OUTSIDE_LINE}\n")
    return folder, {_make_entry(folder, outside, index, kind): ENTRY_KINDS[kind] for index, kind in enumerate(kinds)}


def _within(seconds: float, work: Any) -> Any:
    """`work()` in a daemon thread: its answer, or a failure if it has none within `seconds` (a blocked open)."""
    import threading

    box: list[Any] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # handed to the test's thread
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"no answer within {seconds} s: a read blocked"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


@contextlib.contextmanager
def _address_space(extra: int = 1 << 30) -> Iterator[None]:
    """This process may grow by `extra` bytes of address space, no more, meanwhile: a read that never ends
    (/dev/zero, before the fix) fails with MemoryError rather than taking the host's memory."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status")
    size = next((int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                 if line.startswith("VmSize:")), None) if status.exists() else None
    if size is not None:
        cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


NON_REGULAR = pytest.mark.skipif(sys.platform == "win32" or not Path("/dev/zero").exists(),
                                 reason="FIFOs, devices, sockets and symlinks of a POSIX system")


@NON_REGULAR
@fuzz_settings(max(20, MANIFEST_CASES // 10))
@given(st.lists(st.sampled_from(sorted(ENTRY_KINDS)), min_size=1, max_size=6))
def test_entries_that_are_not_regular_files_get_placed_errors_and_never_block(kinds: list[str]) -> None:
    from npuctl.schema import load_paths

    folder, entries = _hostile_folder(["manifest", *kinds])  # a folder of only a folder has no manifests (exit 2)
    with _address_space():
        result = _within(30, lambda: load_paths([folder]))
    assert all(PLACED.match(str(error)) and OUTSIDE_LINE not in str(error) for error in result.errors), result.errors
    for entry, says in entries.items():
        errors = [error for error in result.errors if error.file == str(entry)]
        if says:
            assert len(errors) == 1 and says in errors[0].message and (errors[0].line, errors[0].column) == (1, 1), \
                (entry, errors)
        else:
            assert not errors, (entry, errors)
    declared = sum(1 for says in entries.values() if says is None)
    assert len(result.deployments) == declared, (kinds, result.deployments, result.errors)
    with _address_space():
        command = _within(30, lambda: CliRunner().invoke(cli, ["validate", str(folder), "-o", "json"]))
    assert command.exit_code == (1 if any(entries.values()) else 0), command.output
    assert OUTSIDE_LINE not in command.output


@NON_REGULAR
def test_validate_refuses_every_kind_of_non_regular_entry_in_its_own_process() -> None:
    folder, entries = _hostile_folder(sorted(ENTRY_KINDS))
    done = subprocess.run([sys.executable, "-m", "npuctl", "validate", str(folder)], capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_memory)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    for entry, says in entries.items():
        if says:
            assert f"{entry}:1:1: " in done.stderr and says in done.stderr, (entry, done.stderr)
    assert OUTSIDE_LINE not in done.stderr + done.stdout


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists(), reason="Linux /proc")
def test_the_size_cap_counts_bytes_read_not_what_stat_says() -> None:
    # /proc/self/pagemap is a regular file whose stat says 0 bytes and which reads for gigabytes: the cap
    # must hold while reading. Named on the command line, so it is read (no folder to stay inside).
    done = subprocess.run([sys.executable, "-m", "npuctl", "validate", "/proc/self/pagemap"], capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_memory)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"/proc/self/pagemap:1:1: more than {MAX_FILE_BYTES} bytes" in done.stderr, done.stderr


def test_errors_quote_a_bounded_excerpt_of_the_file() -> None:
    # A file's lines once came back whole as `unknown field '…'`. Keys and values a message
    # quotes are cut to 60 characters, saying how long they were.
    long = "k" * 1000  # YAML takes keys up to 1024 characters
    texts = {
        "unknown key": VALID.replace("  precision: w8a16\n", f"  precision: w8a16\n  {long}: 1\n"),
        "value not allowed": VALID.replace("precision: w8a16", f"precision: {long}"),
        "duplicate key": VALID + f"{long}: 1\n{long}: 2\n",
        "nested under a long key": VALID.replace("  serve:\n", f"  {long}:\n    x: 1\n  serve:\n"),
    }
    for case, text in texts.items():
        result = load_text(text, "m.yaml")
        assert result.errors, case
        for error in result.errors:
            assert long not in str(error) and "(1000 characters)" in str(error), (case, str(error)[:300])
            assert len(str(error)) < 600, (case, len(str(error)))
