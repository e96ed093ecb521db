"""What a model costs this host once loaded (npuctl.schema.cost.LoadCost): estimated from its artifacts before
it loads (`estimated_cost`, for admission), and measured while it loads (`measured_load`: the process's resident
set growth and the time the sessions took to open)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psutil

from npuctl.runtime.devices import HostFacts
from npuctl.runtime.genai_pack import GenaiPack, read_pack
from npuctl.runtime.graph_facts import graph_facts
from npuctl.runtime.loading import LoadedModel, load_model
from npuctl.runtime.placement import Artifacts, Placement, Where, cpu_placement, place
from npuctl.runtime.seq2seq import DECODER_FILE
from npuctl.schema.cost import LoadCost
from npuctl.schema.models import ModelDeployment, Task

log = logging.getLogger("npuctl.runtime")

PEAK_SAMPLE_SECONDS = 0.005
"""How often a load's resident set is sampled for its peak: a load's temporary buffers live for tens of
milliseconds at least (a graph's read, its optimization), and a sample costs some microseconds."""
_FALLBACK_KV_ELEMENT = 4
"""Bytes per KV cache element when no graph of the model names its cache input: float32's, the largest a
generation pack uses (an over-estimate is the safe side for a memory budget)."""


def estimated_cost(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts) -> LoadCost:
    """The cost of loading `artifacts` where the deployment's rules would put them on `host`, before loading:
    host memory estimated as the bytes of the files its sessions would open. Raises NotServable (as the load
    would) when the rules leave nowhere to run."""
    plan = _plan(deployment, artifacts, host, None)
    return plan.cost(host_bytes=plan.artifact_bytes, load_seconds=0.0, estimated=True)


def measured_load(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts) -> tuple[LoadedModel, LoadCost]:
    """Load the deployment (npuctl.runtime.loading.load_model) and measure what that cost: the process's resident
    set growth over the load and the time it took, and its peak, sizing the files included. Loads running at the
    same time each count the other's growth during their overlap: an over-estimate, the safe side for a budget."""
    return_free_memory()  # else the load reuses freed heap and its growth is under-counted
    before = process_memory()
    started = time.perf_counter()
    with PeakMemory() as peak:
        model = load_model(deployment, artifacts, host)
        seconds = time.perf_counter() - started
        grown = max(process_memory() - before, 0)
        # What sizing takes (little: npuctl.runtime.graph_facts skips the weights) belongs in the load's peak.
        try:
            plan = _plan(deployment, artifacts, host, model.info.where)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a file it cannot size must not stop the model
            log.warning("%s: cannot size the files it loaded (%s); its cost counts what the load measured",
                        deployment.name, exc)
            plan = _Plan(frozenset(), 0, 0, 0)
    return_free_memory()  # what the sizing read is not the model's to keep
    return model, plan.cost(host_bytes=grown, load_seconds=round(seconds, 4), estimated=False,
                            peak_host_bytes=max(peak.highest - before, grown))


class PeakMemory:
    """The process's highest resident set while the block runs, sampled on a thread every `every` seconds (and at
    both ends): portable, where a kernel's own high-water mark is not (Linux's can be reset only through /proc,
    Windows' never)."""

    def __init__(self, every: float = PEAK_SAMPLE_SECONDS) -> None:
        self.every = every
        self.highest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="npuctl-peak-memory", daemon=True)

    def _sample(self) -> None:
        while True:
            self.highest = max(self.highest, process_memory())
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> PeakMemory:
        self.highest = process_memory()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.highest = max(self.highest, process_memory())


def process_memory() -> int:
    """This process's resident set (its working set on Windows), in bytes."""
    return int(psutil.Process().memory_info().rss)


def return_free_memory() -> None:
    """Give the heap's free memory back to the OS, where the C library keeps it: glibc holds freed memory for reuse
    (malloc_trim releases it). Windows' heap gives large freed blocks back by itself: nothing to call there."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return trim


def kv_cache_bytes(pack: GenaiPack, slots: int) -> int:
    """The KV cache of `slots` generations at the pack's full context length: 2 (keys and values) x layers x KV
    heads x head size x context length x element size x slots, from genai_config.json and the cache input's type
    in the pack's graphs. 0 when genai_config gives no layer count."""
    kv = pack.kv
    element = next((size for stage in pack.stages if (size := _input_element_size(stage.path, kv.first_key_input))),
                   _FALLBACK_KV_ELEMENT)
    return 2 * kv.layers * kv.heads * kv.head_size * pack.context_length * element * slots


@dataclass(frozen=True)
class _Plan:
    """What a load opens: the files, the sessions on each EP, the KV cache its generations may hold."""

    files: frozenset[Path]
    context_binary_bytes: int
    npu_sessions: int
    sessions: int
    kv_cache_bytes: int = 0

    @property
    def artifact_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.files)

    def cost(self, host_bytes: int, load_seconds: float, estimated: bool, peak_host_bytes: int = 0) -> LoadCost:
        return LoadCost(host_bytes=host_bytes, peak_host_bytes=peak_host_bytes, artifact_bytes=self.artifact_bytes,
                        kv_cache_bytes=self.kv_cache_bytes,
                        context_binary_bytes=self.context_binary_bytes, npu_sessions=self.npu_sessions,
                        sessions=self.sessions, load_seconds=load_seconds, estimated=estimated)


def _plan(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts, where: Where | None) -> _Plan:
    """The files and sessions of a load that lands at `where` (None: where placement would put it)."""
    if deployment.spec.model.task is Task.TEXT_GENERATION:
        return _generation_plan(deployment, artifacts, host, where)
    runtime = deployment.spec.runtime
    placement = cpu_placement(artifacts, "") if where is Where.CPU else place(runtime, host, artifacts)
    graphs = [binary.path for binary in placement.binaries] if placement.on_npu else _cpu_graphs(artifacts)
    npu_graphs = list(graphs) if placement.on_npu else []
    if deployment.spec.model.task is not Task.TEXT2TEXT_GENERATION:
        return _graph_plan(graphs, npu_graphs)
    graphs, npu_graphs = _with_decoders(artifacts, placement, graphs, npu_graphs)
    slots = 1 if placement.on_npu else deployment.spec.serve.max_batch
    return _graph_plan(graphs, npu_graphs, _seq2seq_kv(graphs[-1], slots))


def _cpu_graphs(artifacts: Artifacts) -> list[Path]:
    return [artifacts.cpu_model] if artifacts.cpu_model is not None else []


def _with_decoders(artifacts: Artifacts, placement: Placement, graphs: list[Path],
                   npu_graphs: list[Path]) -> tuple[list[Path], list[Path]]:
    """An encoder-decoder's decoders: beside each encoder bucket on the NPU when every bucket has one, else one
    on the CPU (as npuctl.runtime.loading opens them)."""
    decoders = [b.decoder for b in placement.binaries if b.decoder is not None]
    if placement.on_npu and decoders and len(decoders) == len(placement.binaries):
        return graphs + decoders, npu_graphs + decoders
    cpu_decoder = [artifacts.model_dir / DECODER_FILE] if artifacts.model_dir is not None else []
    return graphs + cpu_decoder, npu_graphs


def _graph_plan(graphs: list[Path], npu_graphs: list[Path], kv: int = 0) -> _Plan:
    files = frozenset(file for graph in graphs for file in _files_of(graph)[0])
    context = sum(_files_of(graph)[1] for graph in npu_graphs)
    return _Plan(files, context, len(npu_graphs), len(graphs), kv)


def _generation_plan(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts, where: Where | None) -> _Plan:
    """An onnxruntime-genai folder's stages: the NPU pack of this host's SoC when it loads on the NPU, else the
    model folder (as npuctl.runtime.generation.load_generator picks them)."""
    runtime = deployment.spec.runtime
    folder = artifacts.model_dir
    if artifacts.context_binaries and where is not Where.CPU:
        built = place(runtime, host, artifacts)
        if built.on_npu:
            folder = built.binaries[0].path.parent
    if folder is None:
        return _Plan(frozenset(), 0, 0, 0)
    pack = read_pack(folder)
    on_npu = where.on_npu if where is not None else (
        pack.pipeline and place(runtime, host, Artifacts(None, folder, None, pack.context_binaries())).on_npu)
    slots = 1 if on_npu else deployment.spec.serve.max_batch
    graphs = [stage.path for stage in pack.stages]
    npu_graphs = [stage.path for stage in pack.stages if stage.on_qnn] if on_npu else []
    return _graph_plan(graphs, npu_graphs, kv_cache_bytes(pack, slots))


def _seq2seq_kv(decoder: Path, slots: int) -> int:
    """An encoder-decoder's self-attention cache (npuctl.runtime.seq2seq): keys and values of every layer at the
    decoder's fixed length, for each of `slots` generations."""
    inputs = graph_facts(decoder).inputs
    per_slot = sum(_bytes(shape[1:], element) for name, (shape, element) in inputs.items()
                   if name.startswith(("past_key_", "past_value_")))
    return per_slot * slots


def _files_of(graph: Path) -> tuple[frozenset[Path], int]:
    facts = graph_facts(graph)
    return facts.files, facts.context_bytes


def _input_element_size(graph: Path, name: str) -> int | None:
    found = graph_facts(graph).inputs.get(name)
    return found[1] if found else None


def _bytes(shape: tuple[int | str, ...], element: int) -> int:
    count = element
    for dim in shape:
        count *= dim if isinstance(dim, int) else 1
    return count
