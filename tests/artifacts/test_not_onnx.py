"""A source that is no ONNX model where the manifest says it is one: `npuctl build` ended in
protobuf's DecodeError traceback. Now a placed error at the manifest field it is about; and whatever bytes the
file holds, resolving it either works or says why, never with another exception."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from npuctl.artifacts import BuildError, Store
from npuctl.artifacts.sources.context import SourceContext
from npuctl.artifacts.sources.resolve import resolve
from npuctl.cli import cli
from npuctl.schema.enums import Format
from tests.artifacts.conftest import tiny_model
from tests.fuzzing import MANIFEST_CASES, fuzz_settings

MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: bad
spec:
  model:
    source: file:{file}
{format}    task: tensor
  precision: w8a16
  targets: [x-elite]
"""
NOT_ONNX = {
    "random bytes": os.urandom(3000),
    "text": b"this is a README, saved as model.onnx\n",
    "empty": b"",
    "zeros": bytes(4096),
    "a truncated model": b"",  # filled in by the test: the first half of a real one
}


@pytest.mark.parametrize("what", list(NOT_ONNX))
@pytest.mark.parametrize("declared", [True, False])
def test_build_of_a_file_that_is_no_onnx_model_is_a_placed_error(tmp_path: Path, what: str, declared: bool) -> None:
    content = NOT_ONNX[what]
    if what == "a truncated model":
        tiny_model(tmp_path / "real.onnx")
        whole = (tmp_path / "real.onnx").read_bytes()
        content = whole[: len(whole) // 2]
    (tmp_path / "model.onnx").write_bytes(content)
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(MANIFEST.format(file="model.onnx", format="    format: onnx\n" if declared else ""))
    result = CliRunner().invoke(cli, ["build", "-f", str(manifest), "--cache", str(tmp_path / "cache")])
    text = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    field, line = ("spec.model.format", 8) if declared else ("spec.model.source", 7)
    assert re.search(rf"{re.escape(str(manifest))}:{line}:\d+: {field}: ", text), text
    assert "model.onnx is not an ONNX model" in text and "Traceback" not in text and "DecodeError" not in text


@fuzz_settings(MANIFEST_CASES)
@given(content=st.one_of(st.binary(max_size=2000), st.binary(max_size=64).map(lambda b: b * 50)))
def test_resolving_any_bytes_as_onnx_works_or_says_why(tmp_path_factory: pytest.TempPathFactory,
                                                       content: bytes) -> None:
    folder = tmp_path_factory.mktemp("bytes")
    (folder / "model.onnx").write_bytes(content)
    context = SourceContext(folder, Store(folder / "store"))
    for declared in (Format.ONNX, Format.AUTO):
        try:
            resolve("file:model.onnx", context, declared)
        except BuildError as exc:
            assert exc.step == "resolve" and exc.field[:2] == ("spec", "model"), exc
