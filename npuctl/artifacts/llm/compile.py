"""QNN context binaries for the context/iterator graphs of a decoder-pipeline pack, with onnxruntime's own
session options (the plugin EP registered once per process), and where each graph's nodes and weight bytes
went. Runs inside the olive_steps child process."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npuctl.artifacts import facts
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import attention as llm_attention
from npuctl.artifacts.llm import macs as llm_macs
from npuctl.artifacts.llm import weights
from npuctl.runtime import qnn

FINALIZE_HINT = ("set spec.generation.splits to a larger number (smaller graphs), or a lower "
                 "spec.generation.window")
_FINALIZE = re.compile(r"finaliz|1002|MEM_ALLOC", re.IGNORECASE)


@dataclass
class StagePlacement:
    """Where one stage's nodes and weights run."""

    nodes: Counter[str] = field(default_factory=Counter)
    """Execution provider -> nodes (after onnxruntime's graph optimizations)."""
    weight_bytes: Counter[str] = field(default_factory=Counter)
    """Execution provider -> bytes of the initializers its nodes read."""
    cpu_ops: Counter[str] = field(default_factory=Counter)
    """Op types of the nodes on the CPU (GroupQueryAttention and its Q/DQ, with attention: cpu)."""
    macs: Counter[str] = field(default_factory=Counter)
    """Execution provider -> multiply-accumulates of one run of the graph (npuctl.artifacts.llm.macs)."""


@dataclass
class PackPlacement:
    stages: dict[str, StagePlacement] = field(default_factory=dict)

    def report(self, prefill: list[str] | None = None, decode: list[str] | None = None,
               window: int = 1) -> facts.Placement:
        """The shares of nodes and weight bytes on QNN; with the context graphs (`prefill`, over `window` tokens)
        and iterator graphs (`decode`, one token) named, the share of MACs on QNN in each phase. The stages named
        in neither (the embeddings) run once per token in both."""
        nodes: Counter[str] = Counter()
        weights: Counter[str] = Counter()
        for stage in self.stages.values():
            nodes.update(stage.nodes)
            weights.update(stage.weight_bytes)
        phases = {}
        if prefill is not None and decode is not None:
            per_token: Counter[str] = Counter()
            for name, stage in self.stages.items():
                if name not in prefill and name not in decode:
                    per_token.update(stage.macs)
            phases = {"prefill_mac_share": _share(_phase(self.stages, prefill, per_token, window)),
                      "decode_mac_share": _share(_phase(self.stages, decode, per_token, 1))}
        return facts.Placement(
            node_share=_share(nodes), weight_share=_share(weights), **phases,
            stages={name: facts.StagePlacement(nodes=dict(s.nodes), weight_bytes=dict(s.weight_bytes),
                                               cpu_ops=dict(s.cpu_ops), macs=dict(s.macs))
                    for name, s in self.stages.items()})


class Compiler:
    """Compiles (context, iterator) pairs for one SoC into `<name>.onnx` EPContext wrappers + `.bin` files."""

    def __init__(self, soc_model: int, optimization_level: int, weight_sharing: bool,
                 attention: llm_attention.Attention = "cpu", kv_length: int = 0) -> None:
        self.soc_model = soc_model
        self.optimization_level = optimization_level
        self.weight_sharing = weight_sharing
        self.attention = attention
        self.kv_length = kv_length
        """The KV cache length attention's MACs are counted at."""
        self.placement = PackPlacement()

    def pack_options(self) -> dict[str, str]:
        """The QNN provider options the pack's genai_config.json gives its NPU stages. `backend_type` (not a
        library path) lets the EP find the HTP backend it ships with, on Windows and Linux alike."""
        return {"backend_type": "htp", "soc_model": str(self.soc_model), "htp_performance_mode": "burst"}

    def compile_pair(self, pair: Mapping[str, Path], folder: Path) -> dict[str, Path]:
        """Compile each model of `pair` (wrapper name -> source model) into `folder`. With weight sharing the
        pair is compiled into one context: the last session writes the `.bin` both wrappers name."""
        import onnxruntime as ort

        wrappers = {}
        for index, (name, model) in enumerate(pair.items()):
            wrapper = folder / f"{name}.onnx"
            last = index == len(pair) - 1
            config = {"ep.context_enable": "1", "ep.context_embed_mode": "0", "ep.context_file_path": str(wrapper),
                      qnn.RECORD_ASSIGNMENT: "1"}
            if self.weight_sharing:
                config |= {"ep.share_ep_contexts": "1", "ep.stop_share_ep_contexts": "1" if last else "0"}
            extra = {"htp_graph_finalization_optimization_mode": str(self.optimization_level)}
            if self.attention == "npu":
                extra |= llm_attention.provider_options(folder)
            options = qnn.session_options(self.soc_model, config=config, provider_options=extra)
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(str(model), options)
            except Exception as exc:  # ORT's Fail/RuntimeException have no common public base
                raise BuildError("compile", self._explain(model.stem, exc)) from exc
            coverage = qnn.npu_coverage(session)
            if not coverage.nodes_by_ep.get(qnn.EP_NAME):
                raise BuildError("compile", f"the QNN EP took none of the {coverage.total} nodes of graph {model.stem} "
                                 f"for soc {self.soc_model}: is targets[].socModel an SoC this QNN SDK knows?")
            self.placement.stages[name] = placement_of(model, coverage, session, self.kv_length)
            if self.attention == "npu":
                llm_attention.check_placed(model.stem, coverage.other_ops)
            del session
            wrappers[name] = wrapper
        return wrappers

    def _explain(self, graph: str, exc: Exception) -> str:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if _FINALIZE.search(str(exc)):
            return (f"QNN could not finalize graph {graph} for soc {self.soc_model} (error 1002: over the HTP's "
                    f"~2 GB graph limit, an op over VTCM, or an op the HTP lacks): {FINALIZE_HINT}. QNN said: {message}")
        return f"compiling graph {graph} for soc {self.soc_model} failed: {message}"


def placement_of(model: Path, coverage: qnn.Coverage, session: Any, kv_length: int = 0) -> StagePlacement:
    """Nodes per EP from the session's assignment; weight bytes by the EP of the first node reading each; MACs
    by the EP of the node doing them."""
    bytes_of_node = _initializer_bytes_by_node(model)
    macs_of_node = llm_macs.node_macs(model, llm_macs.tokens_of(model), kv_length)
    placement = StagePlacement(Counter(coverage.nodes_by_ep), Counter(), Counter(coverage.other_ops))
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            placement.weight_bytes[subgraph.ep_name] += bytes_of_node.pop(node.name, 0)
            placement.macs[subgraph.ep_name] += macs_of_node.pop(node.name, 0)
    return placement


def cpu_placement(model: Path) -> StagePlacement:
    """A stage that runs wholly on the CPU (the embeddings), its MACs for one token."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = sum(_initializer_bytes_by_node(model).values())
    macs = sum(llm_macs.node_macs(model, 1, 0).values())
    return StagePlacement(Counter({"CPUExecutionProvider": len(graph.node)}),
                          Counter({"CPUExecutionProvider": weights}), Counter(n.op_type for n in graph.node),
                          Counter({"CPUExecutionProvider": macs}))


def _initializer_bytes_by_node(model: Path) -> dict[str, int]:
    """Node name -> bytes of the initializers it is the first reader of."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    sizes = {t.name: weights.tensor_bytes(t) for t in graph.initializer}
    by_node: dict[str, int] = {}
    for node in graph.node:
        total = sum(sizes.pop(name, 0) for name in node.input)
        if total:
            by_node[node.name] = total
    return by_node


def _phase(stages: dict[str, StagePlacement], graphs: list[str], per_token: Counter[str], tokens: int) -> Counter[str]:
    total: Counter[str] = Counter()
    for name in graphs:
        total.update(stages[name].macs)
    for ep, count in per_token.items():
        total[ep] += count * tokens
    return total


def _share(counts: Counter[str]) -> float:
    total = sum(counts.values())
    return counts.get(qnn.EP_NAME, 0) / total if total else 0.0
