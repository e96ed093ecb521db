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
from dataclasses import dataclass, field
from pathlib import Path

from npuctl.artifacts.sources import packs
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.store import Store, sha256_file
from npuctl.schema.models import Format

LOCAL_SCHEMES = ("file", "pkg")
"""Sources read from this PC's files: their errors quote no digest."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


@dataclass(frozen=True)
class SourceContext:
    """What a resolver may use besides the URI."""

    base_dir: Path
    """The manifest's folder: `file:` sources are relative to it."""
    store: Store
    """Where downloaded sources are kept (content-addressed, like build steps)."""
    pins: Mapping[str, str] = field(default_factory=dict)
    """spec.model.sha256: path relative to the source -> expected sha256."""
    insecure_skip_digest: bool = False
    cached_only: bool = False
    """Download nothing: use only what is already in a cache or the store (the build's cached_only)."""
    roots: tuple[Path, ...] | None = None
    """Folders `file:` sources must lead into, links followed. None: anywhere (a Python caller vouching for
    its own manifests); empty: no local source at all (a fleet bundle's manifest, by default)."""


class SourceRefused(BuildError):
    """A source points where its manifest may not read: outside the folders allowed to it, or at something
    that is not a regular file or folder. Permanent, and says nothing of what lies there."""

    def __init__(self, message: str) -> None:
        super().__init__("resolve", message)


@dataclass(frozen=True)
class Located:
    """Where a resolver found the source."""

    path: Path
    revision: str | None = None
    """The immutable version the URI resolved to (a commit hash for `hf:`), when the scheme has one."""
    confined_to: tuple[Path, ...] | None = None
    """Resolved folders every file of the source must lie in, links followed (`file:` with roots, `pkg:`);
    None for caches the resolver itself fills (the Hugging Face cache links into its own blobs folder)."""


Resolver = Callable[[str, SourceContext], Located]
"""(the source without its scheme, the context) -> where its files are."""

_resolvers: dict[str, Resolver] = {}


@dataclass(frozen=True)
class ResolvedSource:
    uri: str
    path: Path
    """The ONNX file, or the model folder."""
    format: Format
    digest: str
    """sha256 over the relative paths and contents of every file the source holds."""
    revision: str | None = None
    """The commit an `hf:` source resolved to (branch names are recorded as the commit they pointed at)."""

    @property
    def folder(self) -> Path:
        """Where tokenizer and sentence-transformers configs live."""
        return self.path if self.path.is_dir() else self.path.parent

    def as_dict(self) -> dict[str, str | None]:
        return {"uri": self.uri, "revision": self.revision, "digest": self.digest}


def register_resolver(scheme: str, resolver: Resolver) -> None:
    """Make `<scheme>:...` sources resolvable (scheme without the colon)."""
    _resolvers[scheme] = resolver


def resolve(uri: str, context: SourceContext, declared: Format = Format.AUTO) -> ResolvedSource:
    """Locate the source, verify spec.model.sha256 pins against it, and detect its format (unless declared)."""
    _load_remote_resolvers()
    scheme, _, rest = uri.partition(":")
    if scheme not in _resolvers:
        raise BuildError("resolve", f"{uri}: no resolver for '{scheme}:' sources (known: "
                         f"{', '.join(s + ':' for s in sorted(_resolvers))})")
    located = _resolvers[scheme](rest, context)
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


def buildable(source: ResolvedSource) -> bool:
    """Whether the local pipeline can build NPU artifacts from this source."""
    return source.format in (Format.ONNX, Format.TRANSFORMERS)


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


register_resolver("file", _resolve_file)
register_resolver("pkg", _resolve_pkg)


def _load_remote_resolvers() -> None:
    # Imported on first use: they register themselves, and huggingface_hub/httpx cost import time.
    from npuctl.artifacts.sources import hf, https  # noqa: F401


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
