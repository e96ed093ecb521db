"""Prebuilt NPU packs: folders of EPContext wrapper ONNX + context binaries, ready to load without compiling.

Layouts read: wrappers at the top of the folder (what `npuctl build` and ORT's context generation write),
`precompiled/<chipset>/` folders (qualcomm/* Hugging Face repos, AI Hub exports; chipset names as in
npuctl.schema.targets), and raw `X.bin` + `X.json` pairs (a QNN context binary with the graph description
qnn-context-binary-utility writes), which get a wrapper generated on import. What each binary was built for
comes from its wrapper (ep_compatibility_info, EPContext attributes), else from its chipset folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from npuctl.artifacts import facts
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.sources import wrappers
from npuctl.artifacts.sources.context import ResolvedSource, buildable
from npuctl.runtime.compat import CompatInfo, sdk_of
from npuctl.schema.models import Target
from npuctl.schema.targets import HTP_ARCH_BY_SOC, SOCS, describe_soc

PRECOMPILED = "precompiled"
WRAPPER_FILE = "model_ctx.onnx"
"""Name of the imported wrapper in the store (as a local compile names it)."""
_SOC_BY_CHIPSET = {info.chipset: info.soc_model for info in SOCS.values() if info.chipset}
_MAX_WRAPPER_BYTES = 1 << 20
"""EPContext wrappers that reference their .bin are ~1 KB; bigger .onnx files are models, not wrappers."""


@dataclass(frozen=True)
class PackEntry:
    """One graph of a pack: a wrapper, or a raw binary with its description."""

    path: Path
    """The wrapper ONNX, or the raw .bin."""
    description: Path | None
    """The qnn-context-binary-utility JSON of a raw .bin; None for a wrapper."""
    compat: CompatInfo
    bucket: int
    """Static sequence length (the first input's axis 1); 0 when the input has no such axis."""

    @property
    def soc_model(self) -> int | None:
        return self.compat.soc_model


def is_pack(folder: Path) -> bool:
    """Whether the folder holds EPContext wrappers or raw context binaries (no model to compile)."""
    return (folder / PRECOMPILED).is_dir() or any(_is_wrapper(f) for f in folder.glob("*.onnx")) or any(
        f.with_suffix(".json").is_file() for f in folder.glob("*.bin"))


def scan(folder: Path) -> list[PackEntry]:
    """Every graph the pack holds. Raises BuildError when it holds none, or a binary's SoC can't be told."""
    entries: list[PackEntry] = []
    chipsets = sorted(p for p in (folder / PRECOMPILED).iterdir() if p.is_dir()) if (folder / PRECOMPILED).is_dir() else []
    for place in [folder, *chipsets]:
        soc = _SOC_BY_CHIPSET.get(place.name) if place in chipsets else None
        if place in chipsets and soc is None:
            raise BuildError("prebuilt", f"{place}: unknown chipset folder {place.name!r} (known: "
                             f"{', '.join(sorted(_SOC_BY_CHIPSET))})")
        entries += _entries_in(place, soc)
    if not entries:
        raise BuildError("prebuilt", f"{folder}: no EPContext wrapper (.onnx) and no .bin with its .json graph "
                         f"description, at the top or under {PRECOMPILED}/<chipset>/")
    return entries


def for_soc(entries: list[PackEntry], soc_model: int, pack: str) -> list[PackEntry]:
    """The pack's graphs for this SoC, one per bucket."""
    chosen = [e for e in entries if e.soc_model == soc_model]
    buckets = [e.bucket for e in chosen]
    duplicate = next((b for b in buckets if buckets.count(b) > 1), None)
    if duplicate is not None:
        paths = ", ".join(str(e.path) for e in chosen if e.bucket == duplicate)
        raise BuildError("prebuilt", f"{pack}: several graphs for {describe_soc(soc_model)} with sequence length "
                         f"{duplicate} ({paths}); keep one per SoC and sequence length")
    return chosen


def holds(entries: list[PackEntry]) -> str:
    """What the pack holds, in words for errors: "soc 88 (Snapdragon X2 Elite) bucket 8"."""
    return "; ".join(sorted({f"{describe_soc(e.soc_model) if e.soc_model else 'an unknown SoC'} bucket {e.bucket}"
                             for e in entries})) or "nothing"


def import_entry(entry: PackEntry, out: Path) -> facts.ImportPack:
    """Copy the entry into `out` as `model_ctx.onnx` + its binary (a raw .bin gets a generated wrapper)."""
    folder = entry.path.parent
    if entry.description is not None:
        binary = out / entry.path.name
        shutil.copyfile(_inside(folder, entry.path.name, entry.path), binary)
        description = wrappers.read_description(entry.description)
        if len(description.graphs) != 1:
            raise BuildError("prebuilt", f"{entry.description}: describes {len(description.graphs)} graphs; "
                             "multi-graph binaries are not imported yet (one graph per .bin)")
        wrappers.write_wrapper(binary, description.graphs[0], out / WRAPPER_FILE, sdk_version=description.sdk_version)
        relative = binary.name
    else:
        relative = _binary_of(entry.path)
        source = _inside(folder, relative, entry.path)
        if not source.is_file():
            raise BuildError("prebuilt", f"{entry.path}: its EPContext node refers to {relative}, which is not "
                             f"beside it")
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relative)
        shutil.copyfile(_inside(folder, entry.path.name, entry.path), out / WRAPPER_FILE)
    info = entry.compat
    return facts.ImportPack(soc_model=info.soc_model, htp_arch=info.htp_arch, precision=None, qnn_sdk=info.qnn_sdk,
                            ep_compatibility_info=info.raw, context_binary=relative)


def _inside(folder: Path, relative: str, named_by: Path) -> Path:
    """A file of the pack, refused when its name or a symlink on the way leads out of the pack's folder."""
    path = folder / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise BuildError("prebuilt", f"{named_by}: {relative!r} leads outside the pack folder {folder}; a pack's "
                         "files must sit inside it (no absolute paths, '..' or links out)")
    return path


def _entries_in(place: Path, chipset_soc: int | None) -> list[PackEntry]:
    entries = []
    for wrapper in sorted(f for f in place.glob("*.onnx") if _is_wrapper(f)):
        info = CompatInfo.of_wrapper(wrapper)
        entries.append(PackEntry(wrapper, None, _with_soc(info, chipset_soc, wrapper), _bucket_of_wrapper(wrapper)))
    wrapped = {(place / _binary_of(e.path)).resolve() for e in entries}
    for binary in sorted(place.glob("*.bin")):
        description = binary.with_suffix(".json")
        if binary.resolve() in wrapped or not description.is_file():
            continue
        graphs = wrappers.read_description(description)
        info = CompatInfo(None, None, sdk_of(graphs.sdk_version or ""))
        first = graphs.graphs[0].inputs[0].shape if graphs.graphs[0].inputs else ()
        entries.append(PackEntry(binary, description, _with_soc(info, chipset_soc, binary),
                                 first[1] if len(first) > 1 else 0))
    return entries


def _with_soc(info: CompatInfo, chipset_soc: int | None, path: Path) -> CompatInfo:
    if info.soc_model is not None:
        if chipset_soc is not None and info.soc_model != chipset_soc:
            raise BuildError("prebuilt", f"{path}: its wrapper says {describe_soc(info.soc_model)}, but it sits in "
                             f"the folder of {describe_soc(chipset_soc)}")
        return info
    if chipset_soc is None:
        raise BuildError("prebuilt", f"{path}: can't tell which SoC it was built for (its wrapper has no "
                         f"ep_compatibility_info); put it under {PRECOMPILED}/<chipset>/ (e.g. "
                         f"{PRECOMPILED}/qualcomm-snapdragon-x-elite/)")
    return CompatInfo(chipset_soc, HTP_ARCH_BY_SOC.get(chipset_soc), info.qnn_sdk, info.raw)


def _is_wrapper(onnx_file: Path) -> bool:
    if onnx_file.stat().st_size > _MAX_WRAPPER_BYTES:
        return False
    import onnx

    return any(n.op_type == "EPContext" for n in onnx.load(str(onnx_file), load_external_data=False).graph.node)


def _binary_of(wrapper: Path) -> str:
    """The .bin an EPContext wrapper refers to, relative to the wrapper's folder."""
    import onnx

    for node in onnx.load(str(wrapper), load_external_data=False).graph.node:
        if node.op_type != "EPContext":
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("embed_mode", 0) == 1:
            raise BuildError("prebuilt", f"{wrapper}: embeds its context binary (embed_mode 1); npuctl keeps "
                             "binaries beside their wrappers (embed_mode 0)")
        relative = attributes.get("ep_cache_context", b"")
        name = relative.decode() if isinstance(relative, bytes) else str(relative)
        if not name or ".." in PurePosixPath(name).parts or PurePosixPath(name).is_absolute():
            raise BuildError("prebuilt", f"{wrapper}: ep_cache_context {name!r} is not a file beside the wrapper")
        return name
    raise BuildError("prebuilt", f"{wrapper}: has no EPContext node")


def _bucket_of_wrapper(wrapper: Path) -> int:
    import onnx

    inputs = onnx.load(str(wrapper), load_external_data=False).graph.input
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    return dims[1] if len(dims) > 1 else 0


def why_not_compiled(targets: list[Target], model: ResolvedSource | None, pack: ResolvedSource | None,
                     entries: list[PackEntry]) -> str:
    """Why `targets` get no context binary: what the pack holds and what would fix it."""
    wanted = ", ".join(f"{t.name} ({describe_soc(t.soc_model or 0)})" for t in targets)
    has = f"{pack.uri} holds {holds(entries)}" if pack else "there is no prebuilt pack"
    if model is None:
        fix = "give a buildable source too (spec.model.source, with the pack in spec.build.prebuilt.source)"
    elif not buildable(model):
        fix = f"spec.model.source {model.uri} is {model.format.value}, which can't be compiled here"
    else:
        fix = "build.strategy is prebuilt: use auto to compile what the pack lacks"
    return f"no context binary for {wanted}: {has}; {fix}"
