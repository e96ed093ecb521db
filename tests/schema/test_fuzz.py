"""Manifest fuzzing: whatever text or bytes land in a watched folder, the loader and `npuctl validate`
answer with a placed error or a valid deployment; never a crash, never a hang, never unbounded memory.

Default run: a small profile (200 cases per property). `NPUCTL_FUZZ=full`: 10,000 per property."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from npuctl.cli import cli
from npuctl.schema import LoadResult, load_file, load_text
from npuctl.schema.loader import MAX_FILE_BYTES
from tests.fuzzing import MANIFEST_CASES, fuzz_settings

VALID = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: fuzz
spec:
  model:
    source: file:tiny.onnx
    task: tensor
  precision: w8a16
  targets: [x-elite, x2-elite]
  accuracy: {threshold: 0.5}
  serve:
    queueLimit: 8
    aliases: [a, b]
  selector:
    matchLabels: {ring: pilot}
"""
# YAML's own line breaks: a position past the last of them is outside the text.
LINE_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
PLACED = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<column>\d+): ")
MESSAGE_CHARS = 1000
"""An error quotes a bounded excerpt of the file (npuctl.schema.errors.excerpt), never the file: with the known
fields listed in a hint, no message needs more."""

# Fragments that stress YAML's corners; mutations splice them in anywhere.
NASTY = [
    "&a ", "*a", "*undefined", "<<: *a\n", "!!python/object/apply:os.system ['true']", "!!binary aGk=", "!custom ",
    "!!set {a, b}", "!!omap [a: 1]", "%YAML 1.1\n---\n", "%TAG ! tag:x,2000:\n---\n", "---\n", "...\n",
    "? [complex, key]\n: v\n", "~: null\n", "1: int key\n", "2001-13-45", "0o99", ".nan", "-.inf", "1e999",
    "9" * 5000, "x" * 70_000, "[" * 200, "{a: " * 100, "- " * 100, "\t", "\x00", "\ufeff", "\u2028", "é漢字🙂",
    "'unterminated", '"\\uZZZZ"', "|\n  block\n", ">-\n  folded\n", "#", "@", "`", "metadata:\n  name: dup\n",
    "a: &b [*b]\n", "kind: ModelDeployment\n", "spec: {model: {source: 5}}\n",
]


def check(result: LoadResult, text: str, file: str) -> None:
    """What a user can rely on: errors name a place inside the text; no errors means deployments."""
    lines = len(LINE_BREAKS.findall(text)) + 1
    for error in result.errors:
        assert error.file == file
        assert 1 <= error.line <= lines, (error, lines)
        assert 1 <= error.column <= len(text) + 1, error
        assert PLACED.match(str(error)), str(error)
        assert error.message
        assert len(error.message) <= MESSAGE_CHARS, f"an error quotes {len(error.message)} characters of the file"
    for loaded in result.deployments:
        assert loaded.name and PLACED.match(loaded.where(("spec", "precision")) + ": ")


def yaml_text(data: Any) -> str:
    from io import StringIO

    out = StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = None
    yaml.dump(data, out)
    return out.getvalue()


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["fp32", "w8a16", "int3", "x-elite", "file:../../etc/passwd", "", "-1", "yes", "null", "~"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
FIELD_PATHS = [
    ("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"), ("spec",), ("spec", "model"),
    ("spec", "model", "source"), ("spec", "model", "task"), ("spec", "precision"), ("spec", "targets"),
    ("spec", "accuracy"), ("spec", "accuracy", "threshold"), ("spec", "serve"), ("spec", "serve", "queueLimit"),
    ("spec", "serve", "aliases"), ("spec", "selector"), ("spec", "runtime"), ("spec", "build"), ("extra",),
    ("spec", "unknownField"),
]


@st.composite
def manifests(draw: st.DrawFn) -> str:
    """A valid manifest with a few fields replaced by values of the wrong type, removed, or added."""
    data = YAML(typ="safe", pure=True).load(VALID)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(FIELD_PATHS))
        parent = data
        for part in path[:-1]:
            if not isinstance(parent, dict):
                break
            parent = parent.setdefault(part, {})
        if isinstance(parent, dict):
            if draw(st.booleans()):
                parent[path[-1]] = draw(values)
            else:
                parent.pop(path[-1], None)
    return draw(st.sampled_from([yaml_text, lambda d: json.dumps(d, default=str)]))(data)


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """The valid manifest, cut, spliced with YAML's nasty corners and random characters."""
    text = draw(st.sampled_from([VALID, VALID.replace("  targets: [x-elite, x2-elite]\n", "  targets: &t [x-elite]\n"
                                                      "  other: *t\n"), "base: &base {precision: fp16}\n" + VALID]))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.integers(0, 3))
        if action == 0:
            text = text[:at] + draw(st.sampled_from(NASTY)) + text[at:]
        elif action == 1:
            text = text[:at] + draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=20)) + text[at:]
        elif action == 2:
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        else:
            lines = text.splitlines(keepends=True)
            line = draw(st.integers(0, max(0, len(lines) - 1)))
            text = "".join(lines[: line + 1] + lines[line:])  # a duplicated line: duplicate keys
    return text


@fuzz_settings(MANIFEST_CASES)
@given(manifests())
def test_wrong_types_and_missing_fields_give_placed_errors(text: str) -> None:
    check(load_text(text, "m.yaml"), text, "m.yaml")


@fuzz_settings(MANIFEST_CASES)
@given(mutated_texts())
def test_mutated_yaml_gives_placed_errors_or_a_deployment(text: str) -> None:
    check(load_text(text, "m.yaml"), text, "m.yaml")


@fuzz_settings(MANIFEST_CASES)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="[]{}:,-?&*!|>'\"#%@ \n\tab01", max_size=300)))
def test_arbitrary_text_gives_placed_errors(text: str) -> None:
    check(load_text(text, "m.yaml"), text, "m.yaml")


_garbage_dir = Path(tempfile.mkdtemp(prefix="npuctl-fuzz-"))


@fuzz_settings(MANIFEST_CASES)
@given(st.one_of(st.binary(max_size=400), st.builds(lambda cut, junk: VALID.encode()[:cut] + junk + VALID.encode()[cut:],
                                                     st.integers(0, len(VALID)), st.binary(max_size=16))))
def test_binary_files_give_placed_errors(raw: bytes) -> None:
    file = _garbage_dir / "m.yaml"
    file.write_bytes(raw)
    result = load_file(file)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = ""
    check(result, text or "x", str(file))


@fuzz_settings(max(20, MANIFEST_CASES // 10))
@given(st.lists(st.one_of(manifests(), mutated_texts()), min_size=1, max_size=3))
def test_validate_command_exits_0_or_1_with_placed_errors(texts: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(dir=_garbage_dir))
    for index, text in enumerate(texts):
        (folder / f"m{index}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(cli, ["validate", str(folder), "-o", "json"])
    assert result.exit_code in (0, 1), result.output
    errors = json.loads(result.stdout)
    assert (result.exit_code == 1) == bool(errors)
    for error in errors:
        assert error["line"] >= 1 and error["column"] >= 1 and error["file"].startswith(str(folder))


# The classic attacks, each through the real command in its own process: it must come back (the
# timeout is a hang guard, not a measurement) with exit 1 and a placed error, within 1 GiB of address space.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
ATTACKS = {
    "billion-laughs": LAUGHS,
    "recursive-alias": "a: &a [*a]\n",
    "deep-flow-nesting": "[" * 100_000,
    "deep-block-nesting": "".join("  " * i + "a:\n" for i in range(300)),
    "huge-string": "metadata: {name: " + "x" * (MAX_FILE_BYTES - 100) + "}\n",
    "huge-int": "spec: {serve: {queueLimit: " + "9" * 100_000 + "}}\n",
    "many-items": "spec: [" + "0," * 300_000 + "]\n",
    "python-tag": "!!python/object/apply:os.system ['touch /tmp/npuctl-pwned']\n",
    "duplicate-keys": VALID + VALID.splitlines()[0] + "\n",
    "merge-of-scalar-keys": "a: &x {? [1]: 2}\nb: {<<: *x}\n",
    "bad-timestamp": VALID.replace("w8a16", "2001-13-45"),
    "non-string-keys": "{1: a, true: b, ~: c, .nan: d}\n",
}


def _limit_memory() -> None:
    # 1 GiB of address space for the command: an expansion that aims at gigabytes dies with a
    # MemoryError (a traceback, exit code != 1) instead of passing.
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.skipif(sys.platform == "win32", reason="address-space limit through POSIX setrlimit")
@pytest.mark.parametrize("name", list(ATTACKS))
def test_validate_survives_classic_attacks(name: str, tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    file.write_text(ATTACKS[name], encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "npuctl", "validate", str(file)], capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_memory)
    assert done.returncode == 1, done.stderr
    assert re.match(rf"{re.escape(str(file))}:\d+:\d+: ", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not Path("/tmp/npuctl-pwned").exists()


# -- hostile corners: unicode, integer limits, hf: sources; the agent's own config and state files -----------

CORNERS = ["\x00", "e" + "\u0301" * 500, "\u202e", "\ufeff", "\U0001f600", "hf:../../x", "hf:org/-bad-", "hf:a--b/c",
           "hf:a/b@..", "hf:a/b/./c", "hf:" + "a" * 200 + "/b", "file:\x00", "pkg:", ""]
LIMITS = [2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -1, 0]
FIELDS = ["spec.model.source", "spec.model.tokenizer", "metadata.name", "spec.serve.name", "spec.serve.maxBatch",
          "spec.serve.queueLimit", "spec.serve.maxInputTokens", "spec.serve.timeoutSeconds", "spec.accuracy.samples",
          "spec.buckets.0", "spec.targets.0.socModel", "spec.build.prebuilt.source"]


def _set(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Put `value` at a dotted path; `.0` makes a one-item list there."""
    *parents, last = dotted.split(".")
    node: Any = document
    for part, after in zip(parents, [*parents[1:], last]):
        if after == "0":
            break
        node = node.setdefault(part, {})
    if last == "0":
        node[parents[-1]] = [value]
    elif parents and parents[-1] == "0":
        node[parents[-2]] = [{last: value}]
    else:
        node[last] = value


@fuzz_settings(MANIFEST_CASES)
@given(st.sampled_from(FIELDS), st.one_of(st.sampled_from(CORNERS), st.sampled_from(LIMITS), st.text(max_size=30)))
def test_corner_values_in_every_field_give_placed_errors_or_a_deployment(field: str, value: Any) -> None:
    document = YAML(typ="safe", pure=True).load(VALID)
    _set(document, field, value)
    text = json.dumps(document)  # JSON is YAML; \u escapes carry the corners through
    check(load_text(text, "m.yaml"), text, "m.yaml")


@fuzz_settings(MANIFEST_CASES)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="[]{}:,-?&*!|>'\"#%@ \n\tab01", max_size=200),
                 st.builds(lambda key, value: f"{key}: {value}\n", st.sampled_from(
                     ["listen", "resyncSeconds", "manifests", "corsOrigins", "allowedHosts", "bodyTimeoutSeconds",
                      "backoffSeconds", "facts", "sources", "lisen"]),
                     st.one_of(st.sampled_from([str(n) for n in LIMITS] + ["[", "{a: 1}", "~", "'\\ud800'", "[x, 1]"]),
                               st.text(max_size=20)))))
def test_damaged_agent_configs_give_placed_errors(text: str) -> None:
    from npuctl.agent.config import AgentConfig
    from npuctl.schema.documents import load_document

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "agent.yaml"
        file.write_bytes(text.encode("utf-8", "surrogatepass"))
        config, errors = load_document(file, AgentConfig)
    assert (config is None) == bool(errors)
    for error in errors:
        assert error.file == str(file) and error.line >= 1 and error.column >= 1 and error.message


STATE_SAMPLE = json.dumps({"deployments": [{"name": "tiny", "phase": "Ready", "conditions": [
    {"type": "Valid", "status": "True", "reason": "Valid", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}],
    "events": [{"time": "t", "deployment": "tiny", "type": "Normal", "reason": "Ready", "message": "m"}]})


@fuzz_settings(MANIFEST_CASES)
@given(st.one_of(st.integers(0, len(STATE_SAMPLE)).map(lambda cut: STATE_SAMPLE[:cut].encode()),
                 st.sampled_from([b"[]", b"null", b"1", b'{"deployments": {}}', b'{"deployments": [1]}',
                                  b'{"deployments": [{"name": "x", "phase": "Hibernating"}]}',
                                  b'{"deployments": [], "events": [{"type": "Fatal"}]}', b"[" * 100_000]),
                 st.binary(max_size=200)),
       st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"  \n", b"ok-token", b"two words", b"\xff\xfe"])))
def test_a_damaged_state_folder_never_crashes_the_start(status: bytes, token: bytes) -> None:
    from npuctl.agent.auth import StateFolderError, ensure_token
    from npuctl.agent.status import StatusBook

    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        (state / "status.json").write_bytes(status)
        (state / "token").write_bytes(token)
        book = StatusBook(state)
        book.load()  # never raises: a damaged history is dropped with a warning
        try:
            assert ensure_token(state)
        except StateFolderError as exc:
            assert str(state / "token") in str(exc)
