"""What an onnxruntime-genai model folder holds, read from its genai_config.json: a plain `decoder` model (one
ONNX graph, CPU here) or a QNN `decoder-pipeline` pack (EPContext stages on the NPU, helper stages on the CPU),
and how to hand a pack to the QNN EP of this host."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt, ValidationError

from npuctl.errors import NpuctlError
from npuctl.runtime.compat import CompatInfo
from npuctl.runtime.placement import ContextBinary

GENAI_CONFIG = "genai_config.json"
PIPELINE = "decoder-pipeline"
_QNN_KEYS = ("qnn", "QNN", "QNNExecutionProvider")
DEFAULT_PAST_KEYS = "past_key_values.%d.key"
MAX_CONFIG_BYTES = 1 << 20


class PackError(NpuctlError, ValueError):
    """The folder is not a usable onnxruntime-genai model (the message says what is missing)."""


class _Lenient(BaseModel):
    # genai_config.json has many more keys than these; only the ones read here are checked.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _SessionOptions(_Lenient):
    provider_options: list[dict[str, Any]] = []


class _StageEntry(_Lenient):
    filename: str | None = None
    session_options: _SessionOptions = _SessionOptions()


class _Window(_Lenient):
    window_size: PositiveInt | None = None
    slide_key_value_cache: bool | None = None


class _DecoderInputs(_Lenient):
    past_key_names: str | None = None
    past_names: str | None = None


class _Decoder(_StageEntry):
    pipeline: list[dict[str, _StageEntry]] = []
    sliding_window: _Window | None = None
    num_hidden_layers: NonNegativeInt = 0
    num_key_value_heads: NonNegativeInt | None = None
    num_attention_heads: NonNegativeInt | None = None
    head_size: NonNegativeInt | None = None
    hidden_size: NonNegativeInt | None = None
    inputs: _DecoderInputs = _DecoderInputs()

    def kv_layout(self) -> KvLayout:
        heads = self.num_key_value_heads or self.num_attention_heads or 0
        head_size = self.head_size or (self.hidden_size or 0) // max(self.num_attention_heads or 1, 1)
        template = self.inputs.past_key_names or self.inputs.past_names or DEFAULT_PAST_KEYS
        try:
            first = template % 0
        except (TypeError, ValueError):  # not a "%d" template: genai could not name the cache inputs either
            first = DEFAULT_PAST_KEYS % 0
        return KvLayout(self.num_hidden_layers, heads, head_size, first)


class _Model(_Lenient):
    type: str = ""
    context_length: int | None = None
    eos_token_id: int | list[int] = []
    decoder: _Decoder


class _Search(_Lenient):
    max_length: int | None = None


class _Config(_Lenient):
    """What is read of genai_config.json."""

    model: _Model
    search: _Search = _Search()


@dataclass(frozen=True)
class Stage:
    """One ONNX graph of the model: the decoder, or one stage of a pipeline."""

    name: str
    path: Path
    on_qnn: bool
    """Whether its session options ask for the QNN EP."""
    nodes: int
    """Graph nodes (an EPContext wrapper is one node, however large its binary)."""
    context: CompatInfo | None
    """What its EPContext wrapper was compiled for; None for an ordinary graph."""


@dataclass(frozen=True)
class KvLayout:
    """The KV cache's shape as genai_config.json gives it (0 where it does not)."""

    layers: int
    heads: int
    head_size: int
    first_key_input: str
    """The graph input of layer 0's keys, whose element type is the cache's."""


@dataclass(frozen=True)
class GenaiPack:
    folder: Path
    model_type: str
    """genai_config's model.type: llama, phi3, qwen2, ..., or decoder-pipeline."""
    context_length: int
    eos_token_ids: frozenset[int]
    stages: tuple[Stage, ...]
    """The decoder graph, or the pipeline's stages in order."""
    kv: KvLayout = KvLayout(0, 0, 0, DEFAULT_PAST_KEYS % 0)
    padded_window: int | None = None
    """A pipeline whose prompt chunks are padded to this window in a KV cache that does not slide (the Olive
    layout): the padded prompt must leave room in the cache. None otherwise."""

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt that leaves room for one generated token. With a padded window, onnxruntime-genai
        pads the last chunk to a whole window; a prompt whose windows fill the cache cannot generate
        ("GenerateNextToken called with sequence length already at max_length")."""
        if self.padded_window:
            return (self.context_length - 1) // self.padded_window * self.padded_window
        return self.context_length - 1

    @property
    def pipeline(self) -> bool:
        return self.model_type == PIPELINE

    def context_binaries(self) -> tuple[ContextBinary, ...]:
        """The EPContext stages, as placement knows context binaries."""
        return tuple(ContextBinary(s.context.soc_model or 0, None, s.path, s.context)
                     for s in self.stages if s.context is not None)

    def npu_share(self) -> float:
        """Share of nodes in stages that ask for the QNN EP: only for a pack no build measured (the build's
        placement, ContextBinary.npu_coverage, counts inside the binaries and the CPU nodes beside them)."""
        on_qnn = sum(s.nodes for s in self.stages if s.on_qnn)
        total = sum(s.nodes for s in self.stages)
        return on_qnn / total if total else 0.0


def read_pack(folder: Path) -> GenaiPack:
    """Read and check a model folder; raise PackError naming what is wrong."""
    file = folder / GENAI_CONFIG
    try:
        config = _Config.model_validate_json(_read_config(file))
    except OSError as exc:
        raise PackError(f"{file} cannot be read: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise PackError(f"{file} is not an onnxruntime-genai config: {where}: {first['msg']}") from exc
    model, decoder = config.model, config.model.decoder
    context_length = model.context_length or config.search.max_length or 0
    if context_length <= 0:
        raise PackError(f"{file} gives no model.context_length")
    if model.type == PIPELINE:
        entries: list[tuple[str, _StageEntry]] = [(name, entry) for step in decoder.pipeline
                                                  for name, entry in step.items()]
        if not entries:
            raise PackError(f"{file}: a decoder-pipeline model needs model.decoder.pipeline stages")
    else:
        entries = [("decoder", decoder)]
    stages = tuple(_stage(folder, name, entry) for name, entry in entries)
    window = decoder.sliding_window if model.type == PIPELINE else None
    padded = (window.window_size if window is not None and window.window_size
              and window.slide_key_value_cache is False else None)
    eos = model.eos_token_id
    return GenaiPack(folder, model.type, context_length, frozenset(eos if isinstance(eos, list) else [eos]),
                     stages, decoder.kv_layout(), padded)


def _read_config(file: Path) -> bytes:
    """The config's bytes: a regular file (a FIFO would block the reader for ever) of at most MAX_CONFIG_BYTES,
    read no further than that."""
    if not file.is_file():
        raise PackError(f"{file} is missing or not a regular file")
    with file.open("rb") as stream:
        data = stream.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise PackError(f"{file} is over {MAX_CONFIG_BYTES >> 20} MiB; an onnxruntime-genai config is a few KB")
    return data


def host_view(pack: GenaiPack, qnn_options: Mapping[str, str], cache: Path) -> Path:
    """A folder onnxruntime-genai can load on this host: the pack's files (hard-linked, else copied) with a
    genai_config.json whose QNN stages carry `qnn_options`. Needed because genai applies
    Config.set_provider_option only to the decoder's own session, not to pipeline stages, and refuses
    stage paths outside the model folder. Reused while the pack and the options are the same."""
    config = json.loads((pack.folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    patched = copy.deepcopy(config)
    for step in patched["model"]["decoder"]["pipeline"]:
        for entry in step.values():
            for provider in entry.get("session_options", {}).get("provider_options", []):
                for key in _QNN_KEYS:
                    if key in provider:
                        provider[key] = _host_qnn(provider[key]) | dict(qnn_options)
    blob = json.dumps(patched, sort_keys=True).encode()
    view = cache / hashlib.sha256(blob + str(pack.folder.resolve()).encode()).hexdigest()[:16]
    if (view / GENAI_CONFIG).is_file():
        return view
    work = cache / f"{view.name}.tmp{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    for file in pack.folder.rglob("*"):
        if file.is_file() and file.name != GENAI_CONFIG:
            target = work / file.relative_to(pack.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(file, target)
    work.mkdir(parents=True, exist_ok=True)
    (work / GENAI_CONFIG).write_text(json.dumps(patched, indent=2), encoding="utf-8")
    try:
        os.replace(work, view)
    except OSError:  # another process made the same view first
        shutil.rmtree(work, ignore_errors=True)
    return view


def _stage(folder: Path, name: str, entry: _StageEntry) -> Stage:
    if not entry.filename:
        raise PackError(f"{folder / GENAI_CONFIG}: stage {name!r} has no filename")
    path = folder / entry.filename
    # onnxruntime-genai refuses stage paths outside the model folder; so does this, before reading one.
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        raise PackError(f"{folder / GENAI_CONFIG}: stage {name!r} names {entry.filename}, which is not in {folder}")
    on_qnn = any(key in provider for provider in entry.session_options.provider_options for key in _QNN_KEYS)
    try:
        nodes, is_context = _graph_facts(path)
        context = CompatInfo.of_wrapper(path) if is_context else None
    except (DecodeError, ValueError, OSError) as exc:
        raise PackError(f"{path} (stage {name!r}) is not a readable ONNX graph: {type(exc).__name__}: {exc}") from exc
    return Stage(name, path, on_qnn, nodes, context)


def _graph_facts(path: Path) -> tuple[int, bool]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return len(graph.node), any(node.op_type == "EPContext" for node in graph.node)


def _host_qnn(options: Mapping[str, Any]) -> dict[str, Any]:
    """A pack's QNN options with its backend library made loadable here: packs name `QnnHtp.dll`, which
    only resolves on Windows; the HTP backend onnxruntime-qnn ships is found by backend_type instead."""
    options = dict(options)
    backend = options.get("backend_path")
    if backend is not None and not Path(str(backend)).is_absolute():
        options.pop("backend_path")
        options["backend_type"] = "htp"
    return options


def _link_or_copy(source: Path, target: Path) -> None:
    # Context binaries are gigabytes: link when the file system allows it (Windows NTFS does, unprivileged).
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
