"""The YAML loader: every error of a file, each at the right line and column."""

from pathlib import Path

import pytest

from npuctl.schema import load_paths, load_text

HEAD = "apiVersion: npuctl.dev/v1alpha1\nkind: ModelDeployment\n"


def errors(text: str) -> list[tuple[int, int, str, str]]:
    return [(e.line, e.column, e.path, e.message) for e in load_text(text, "m.yaml").errors]


def test_three_mistakes_three_errors_at_their_positions() -> None:
    text = HEAD + (
        "metadata:\n"
        "  name: Bad_Name\n"          # line 4, value at col 9
        "spec:\n"
        "  model:\n"
        "    source: pkg:x/y\n"
        "  precison: w8a8\n"          # line 8, key at col 3
        "  runtime:\n"
        "    fallback: sometimes\n"   # line 10, value at col 15
    )
    found = sorted(errors(text))
    assert [(line, col, path) for line, col, path, _ in found] == [
        (4, 9, "metadata.name"), (8, 3, "spec.precison"), (10, 15, "spec.runtime.fallback"),
    ]
    assert "did you mean 'precision'?" in found[1][3]
    assert found[2][3] == "'sometimes' is not one of cpu, none"


def test_error_message_reads_file_line_column_path_message() -> None:
    text = HEAD + "metadata: {name: m}\nspec:\n  model: {source: 'pkg:x/y'}\n  precision: int3\n"
    (error,) = load_text(text, "dir/m.yaml").errors
    assert str(error) == f"{Path('dir/m.yaml')}:6:14: spec.precision: 'int3' is not one of fp32, fp16, w8a8, w8a16, w4a16, int4"


def test_positions_inside_sequence_items() -> None:
    text = HEAD + (
        "metadata: {name: m}\n"
        "spec:\n"
        "  model: {source: 'pkg:x/y'}\n"
        "  targets:\n"
        "    - x-elite\n"
        "    - alias: x2-elite\n"
        "      htpArh: 81\n"           # line 9: typo inside the second item
        "    - x9\n"                  # line 10
    )
    found = sorted(errors(text))
    assert [(line, col, path) for line, col, path, _ in found] == [
        (9, 7, "spec.targets.1.htpArh"), (10, 7, "spec.targets.2.alias"),
    ]
    assert "did you mean 'htpArch'?" in found[0][3]


def test_missing_required_field_points_at_its_parent() -> None:
    found = errors(HEAD + "metadata: {name: m}\nspec:\n  precision: fp16\n")
    assert found == [(4, 1, "spec.model", "required field 'model' is missing")]


def test_syntax_error_is_positioned() -> None:
    ((line, col, path, message),) = errors(HEAD + "metadata:\n  name: [unclosed\n")
    assert line >= 4 and path == "" and message.startswith("YAML syntax")


def test_duplicate_keys_are_errors() -> None:
    found = errors(HEAD + "metadata: {name: m}\nspec:\n  model: {source: 'pkg:x/y'}\n  precision: fp16\n  precision: w8a8\n")
    assert found == [(7, 3, "spec.precision", "duplicate key 'precision' (first at line 6)")]


def test_custom_tags_are_refused() -> None:
    (found,) = errors(HEAD + "metadata: {name: !!python/object:os.system m}\nspec: {model: {source: 'pkg:x/y'}}\n")
    assert found[2] == "metadata.name" and "not allowed" in found[3]


def test_alias_bombs_are_bounded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]\n"
    (found,) = errors(bomb)
    assert "more than" in found[3]


def test_anchors_and_merge_keys_work() -> None:
    text = HEAD + "metadata: {name: m}\nspec:\n  model: {source: 'pkg:x/y'}\n  serve:\n    <<: {maxBatch: 4, queueLimit: 9}\n    queueLimit: 10\n"
    (loaded,) = load_text(text).deployments
    assert (loaded.deployment.spec.serve.max_batch, loaded.deployment.spec.serve.queue_limit) == (4, 10)


def test_every_document_of_a_file_is_checked() -> None:
    good = HEAD + "metadata: {name: a}\nspec: {model: {source: 'pkg:x/y'}}\n"
    bad = HEAD + "metadata: {name: b}\nspec: {model: {source: 'ftp://x'}}\n"
    result = load_text(good + "---\n" + bad + "---\n")
    assert [d.name for d in result.deployments] == ["a"]
    (error,) = result.errors
    assert (error.line, error.path) == (9, "spec.model.source") and "no known scheme" in error.message


def test_not_a_mapping() -> None:
    assert "a manifest is a mapping" in errors("- just\n- a list\n")[0][3]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    doc = HEAD + "metadata:\n  name: same\nspec: {model: {source: 'pkg:x/y'}}\n"
    (tmp_path / "a.yaml").write_text(doc)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(doc)
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("ignored")
    result = load_paths([tmp_path])
    assert [d.name for d in result.deployments] == ["same"]
    (error,) = result.errors
    assert error.file.endswith("b.yml") and (error.line, error.column) == (4, 9)
    assert "already declared at" in error.message and "a.yaml:4:9" in error.message


def test_oversized_and_binary_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (1 << 20) + "\n")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    messages = {Path(e.file).name: e.message for e in load_paths([tmp_path]).errors}
    assert "limited to" in messages["big.yaml"]
    assert "UTF-8" in messages["bin.yaml"]


def test_missing_path_raises() -> None:
    with pytest.raises(FileNotFoundError):
        load_paths([Path("does/not/exist")])


def test_where_points_back_into_the_file() -> None:
    (loaded,) = load_text(HEAD + "metadata: {name: m}\nspec:\n  model:\n    source: pkg:x/y\n", "m.yaml").deployments
    assert loaded.where(("spec", "model", "source")) == "m.yaml:6:13"
    assert loaded.where(("spec", "precision")) == "m.yaml:5:3"


def test_manifests_spell_fields_one_way_only() -> None:
    found = errors(HEAD + "metadata: {name: m}\nspec:\n  model: {source: 'pkg:x/y'}\n  shapes: {sequence_lengths: [64]}\n")
    assert found == [(6, 12, "spec.shapes.sequence_lengths",
                      "unknown field 'sequence_lengths'; did you mean 'sequenceLengths'?")]
