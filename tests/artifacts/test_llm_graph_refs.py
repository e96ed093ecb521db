"""llm-static without the weights in memory (npuctl/artifacts/llm/graph_refs.py, olive_steps.split_assignments and
split_graph): the split map from config.json alone, graphs read with their weights as references, each split's
weights copied into its own data file; the splits the same as Olive's SplitModel makes from the loaded model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import graph_refs, olive_steps

pytest.importorskip("olive")
HIDDEN, VOCAB = 32, 64
ASSIGNMENTS = {"model.embed_tokens": 0, "model.layers.0": 1, "model.layers.1": 2, "lm_head": 3}


def decoder_graph(folder: Path, **save: object) -> Path:
    """Embedding, two layers (a MatMul each, one with a bias under onnx's 1 KB inline limit) and lm_head, named as
    the genai builder names them, saved into `folder` as model.onnx (`save`: onnx.save_model's arguments)."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [helper.make_node("Gather", ["embed.weight", "input_ids"], ["h0"], name="/model/embed_tokens/Gather")]
    initializers = [weight("embed.weight", VOCAB, HIDDEN)]
    for layer in range(2):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", f"w{layer}"], [f"m{layer}"],
                                      name=f"/model/layers.{layer}/mlp/MatMul"))
        nodes.append(helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"h{layer + 1}"],
                                      name=f"/model/layers.{layer}/mlp/Add"))
        initializers += [weight(f"w{layer}", HIDDEN, HIDDEN), weight(f"b{layer}", HIDDEN)]
    nodes.append(helper.make_node("MatMul", ["h2", "lm_head.weight"], ["logits"], name="/lm_head/MatMul"))
    initializers.append(weight("lm_head.weight", HIDDEN, VOCAB))
    graph = helper.make_graph(
        nodes, "decoder", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", VOCAB])], initializers,
        value_info=[helper.make_tensor_value_info(f"h{i}", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])
                    for i in range(3)]
        + [helper.make_tensor_value_info(f"m{i}", TensorProto.FLOAT, ["batch", "sequence", HIDDEN]) for i in range(2)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), **save)  # type: ignore[arg-type]
    (folder / "genai_config.json").write_text("{}", encoding="utf-8")
    return folder / "model.onnx"


def tensors(model_file: Path) -> dict[str, bytes]:
    """Name -> bytes of every initializer of `model_file`, external data read."""
    model = onnx.load(str(model_file))
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


def without_data(model_file: Path) -> onnx.ModelProto:
    """The graph with each initializer's data and where it is cleared: what is left must be the same."""
    return cleared(onnx.load(str(model_file), load_external_data=False))


def cleared(model: onnx.ModelProto) -> onnx.ModelProto:
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
        tensor.ClearField("data_location")
        del tensor.external_data[:]
    return model


def test_an_inline_models_weights_are_read_as_references_to_their_bytes_in_the_file(tmp_path: Path) -> None:
    model_file = decoder_graph(tmp_path)
    graph = graph_refs.load_graph(model_file)
    full = onnx.load(str(model_file))
    references = {t.name: ExternalDataInfo(t) for t in graph.graph.initializer
                  if t.data_location == TensorProto.EXTERNAL}
    # The 1 KB-and-over weights are references into model.onnx; the 128-byte biases stay in the graph.
    assert set(references) == {"embed.weight", "w0", "w1", "lm_head.weight"}
    data = model_file.read_bytes()
    for tensor in full.graph.initializer:
        if tensor.name in references:
            info = references[tensor.name]
            assert info.location == "model.onnx"
            assert data[info.offset:info.offset + info.length] == tensor.raw_data
        else:
            assert next(t for t in graph.graph.initializer if t.name == tensor.name) == tensor
    assert without_data(model_file) == cleared(graph)


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_each_split_gets_its_own_data_file_and_the_graphs_olives_split_makes_from_the_loaded_model(
        tmp_path: Path, external: bool) -> None:
    from olive.passes.onnx.split import SplitModel

    save = {"save_as_external_data": True, "location": "model.onnx.data"} if external else {}
    source = decoder_graph(tmp_path / "model", **save).parent
    ours = olive_steps.split_graph(source, ASSIGNMENTS, tmp_path / "ours")
    theirs = olive_steps._run(SplitModel, {"split_assignments": ASSIGNMENTS}, olive_steps._onnx_model(source),
                              tmp_path / "theirs")
    originals = tensors(source / "model.onnx")
    for (name, component), (_, reference) in zip(ours.get_model_components(), theirs.get_model_components(),
                                                  strict=True):
        path, expected = Path(component.model_path), Path(reference.model_path)
        assert without_data(path) == without_data(expected), name
        assert tensors(path) == tensors(expected), name
        # Its own data file beside it, holding its tensors and nothing else.
        model = onnx.load(str(path), load_external_data=False)
        locations = {ExternalDataInfo(t).location for t in model.graph.initializer
                     if t.data_location == TensorProto.EXTERNAL}
        assert locations == {f"{path.name}.data"}, name
        assert (path.parent / f"{path.name}.data").stat().st_size == sum(
            len(originals[t.name]) for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    assert len(list(ours.get_model_components())) == 4


def test_the_split_map_comes_from_config_json_alone_without_any_weights(tmp_path: Path) -> None:
    # Llama-3.2-3B's shape: 28 layers; no safetensors in the folder at all.
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
              "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
              "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assignments = olive_steps.split_assignments(tmp_path, 3, tmp_path / "info")
    expected = {"model.embed_tokens": 0, "lm_head": 4} | {f"model.layers.{i}": 1 + (i >= 10) + (i >= 19)
                                                         for i in range(28)}
    assert assignments == expected
    assert not (tmp_path / "info").exists()


def test_the_split_map_is_the_one_olive_finds_in_the_loaded_model(tmp_path: Path) -> None:
    from olive.model import HfModelHandler
    from olive.passes.pytorch.capture_split_info import CaptureSplitInfo

    from tests.tiny_llama import make_tiny_decoder

    for architecture in ("llama", "qwen2", "phi3"):
        folder = make_tiny_decoder(tmp_path / architecture, architecture)
        loaded = olive_steps._run(CaptureSplitInfo, {"num_splits": 2, "unique_embeds_lm_head_splits": True},
                                  HfModelHandler(model_path=str(folder)), tmp_path / "loaded")
        expected = {str(k): int(v) for k, v in loaded.model_attributes["split_assignments"].items()}
        assert olive_steps.split_assignments(folder, 2, tmp_path / "meta") == expected, architecture


@pytest.mark.parametrize("damage", ["truncated", "not onnx", "empty", "a damaged opset import"])
def test_a_file_that_is_no_whole_onnx_model_is_llm_statics_error_naming_it(tmp_path: Path, damage: str) -> None:
    model_file = decoder_graph(tmp_path)
    data = model_file.read_bytes()
    if damage == "truncated":
        model_file.write_bytes(data[: len(data) // 2])
    elif damage == "not onnx":
        model_file.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif damage == "empty":
        model_file.write_bytes(b"")
    else:  # protobuf's wire format throughout, but an opset_import (field 8) that is no OperatorSetIdProto
        model_file.write_bytes(data + bytes([8 << 3 | 2, 2, 0x0A, 0xFF]))
    with pytest.raises(BuildError) as refused:
        graph_refs.load_graph(model_file)
    assert refused.value.step == "llm-static" and str(model_file) in refused.value.message


def test_a_split_gets_its_own_data_file_and_a_reference_out_of_the_source_folder_is_refused(tmp_path: Path) -> None:
    weight = np.arange(1024, dtype=np.float32).reshape(32, 32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                              [numpy_helper.from_array(weight, "w")])
    source, split = tmp_path / "source", tmp_path / "split"
    source.mkdir()
    split.mkdir()
    onnx.save_model(helper.make_model(graph), str(source / "model.onnx"), save_as_external_data=True,
                    location="model.data", size_threshold=0)
    model = onnx.load(str(source / "model.onnx"), load_external_data=False)
    onnx.save(model, str(split / "part.onnx"))
    graph_refs.localize(split / "part.onnx", source)
    assert [p.name for p in sorted(split.iterdir())] == ["part.onnx", "part.onnx.data"]
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(str(split / "part.onnx")).graph.initializer[0]),
                                  weight)
    [entry] = [e for e in model.graph.initializer[0].external_data if e.key == "location"]
    entry.value = "../model.data"
    onnx.save(model, str(split / "escaping.onnx"))
    with pytest.raises(BuildError, match=r"llm-static: w: its data file '\.\./model\.data' is not in"):
        graph_refs.localize(split / "escaping.onnx", source)
