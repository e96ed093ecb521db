"""Can a context binary hold a tied embedding once? Three tiny QDQ graphs over one uint8 table [vocab, hidden]
are compiled for the HTP (x-elite, QNN SDK of onnxruntime-qnn) and the context binaries' sizes printed:

- `gather`: the token lookup only (a Gather of the table, its output on the table's own uint8 grid);
- `fc`: lm_head only (a Gemm with transB=1, which the QNN EP makes a FullyConnected whose weight is [vocab, hidden],
  the table's own layout);
- `both`: the two in one graph, reading the same ONNX initializer through one DequantizeLinear.

If QNN kept one copy of a static tensor that two ops read, `both` would be about the size of `fc`. With QNN SDK
2.51 it is the sum of the other two: the HTP prepares each op's weight in a layout of its own, even within one graph,
so an embedding tied to an lm_head on the HTP is stored twice whatever the pipeline's stages are. (A Gather whose
output is uint16 stores its table at 2 bytes per element: a third copy's worth.)

    python bench/tied_embedding.py [--vocab 8192 --hidden 512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def graph(kind: str, table: np.ndarray[Any, np.dtype[np.uint8]]) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    vocab, hidden = table.shape
    weights = [numpy_helper.from_array(table, "table_q"),
               numpy_helper.from_array(np.array(0.01, np.float32), "table_scale"),
               numpy_helper.from_array(np.array(128, np.uint8), "table_zero"),
               numpy_helper.from_array(np.array(0.05, np.float32), "act_scale"),
               numpy_helper.from_array(np.array(32768, np.uint16), "act_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["table_q", "table_scale", "table_zero"], ["table"])]
    inputs, outputs = [], []
    if kind in ("gather", "both"):
        grid = ["table_scale", "table_zero"]
        inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 1]))
        nodes += [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
                  helper.make_node("QuantizeLinear", ["rows", *grid], ["rows_q"]),
                  helper.make_node("DequantizeLinear", ["rows_q", *grid], ["rows_dq"]),
                  helper.make_node("QuantizeLinear", ["rows_dq", *grid], ["embeddings"])]
        outputs.append(helper.make_tensor_value_info("embeddings", TensorProto.UINT8, [1, 1, hidden]))
    if kind in ("fc", "both"):
        grid = ["act_scale", "act_zero"]
        inputs.append(helper.make_tensor_value_info("hidden", TensorProto.UINT16, [1, hidden]))
        nodes += [helper.make_node("DequantizeLinear", ["hidden", *grid], ["hidden_dq"]),
                  helper.make_node("Gemm", ["hidden_dq", "table"], ["logits_f"], transB=1),
                  helper.make_node("QuantizeLinear", ["logits_f", *grid], ["logits"])]
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.UINT16, [1, vocab]))
    model = helper.make_model(helper.make_graph(nodes, kind, inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def main() -> None:
    import onnx

    from npuctl.artifacts.compile import CONTEXT_BINARY, compile_context

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    table = np.random.default_rng(0).integers(0, 256, (args.vocab, args.hidden), dtype=np.uint8)
    sizes = {"table": table.nbytes}
    with tempfile.TemporaryDirectory(prefix="npuctl-tied-") as scratch:
        for kind in ("gather", "fc", "both"):
            folder = Path(scratch) / kind
            (folder / "out").mkdir(parents=True)
            onnx.save(graph(kind, table), str(folder / "source.onnx"))
            compiled = compile_context(folder / "source.onnx", folder / "out", soc_model=60, fp16=False,
                                       optimization_level=1)
            assert not compiled.coverage.other_ops, f"{kind}: not all on the HTP: {compiled.coverage}"
            sizes[kind] = (folder / "out" / CONTEXT_BINARY).stat().st_size
    print(json.dumps(sizes))
    print(f"gather {sizes['gather'] / sizes['table']:.2f}x the table, fc {sizes['fc'] / sizes['table']:.2f}x, both "
          f"{sizes['both'] / sizes['table']:.2f}x: "
          + ("stored once" if sizes["both"] < sizes["fc"] + sizes["table"] / 2 else "stored twice"))


if __name__ == "__main__":
    main()
