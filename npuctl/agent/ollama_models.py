"""Ollama's model commands mapped to the declarative world, on an agent: `pull` of a name a source can resolve
writes a manifest through the control API's apply path (`npuctl apply`'s), and `delete` removes the manifest that
declares a model; both with the agent's token. A name no source resolves is a 400 saying how to declare it.

Ollama's names map as follows: `hf.co/ORG/REPO` (or `huggingface.co/...`) is `spec.model.source: hf:ORG/REPO`, a
text-generation deployment named after REPO; Ollama's library names (`llama3.2`) name no source npuctl can read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from npuctl.serve.endpoints import Handler
from npuctl.serve.http.body import read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.sse import LineStream
from npuctl.serve.http.validation import parse
from npuctl.serve.ollama.bodies import DeleteRequest, PullRequest


class Manifests(Protocol):
    """What pull and delete need of the control API (npuctl/agent/api.py's ControlApi)."""

    @property
    def declared(self) -> Mapping[str, object]:
        """The deployments the watched manifests declare, by name."""
        ...

    def guarded(self, handler: Handler) -> Handler: ...

    async def write(self, file: str, text: str, dry_run: bool) -> dict[str, Any]: ...

    def remove(self, name: str) -> dict[str, Any]: ...

_HF = re.compile(r"^(?:hf\.co|huggingface\.co)/([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(?::(.+))?$")
LATEST = "latest"
_LIMIT = 64 << 10
"""Bytes of a pull or delete body: a name and two flags."""
DECLARE = ("declare it in a manifest (spec.model.source: hf:ORG/REPO[/FILE], task: text-generation) and "
           "`npuctl apply -f` it, or pull hf.co/ORG/REPO")


def ollama_model_routes(api: Manifests) -> list[Route]:
    async def pull(request: Request) -> Response:
        asked = parse(PullRequest, await read_json(request, _LIMIT))
        deployment, manifest = manifest_for(asked.named)
        await api.write(f"{deployment}.yaml", manifest, dry_run=False)
        done = [{"status": "pulling manifest"}, {"status": f"writing manifest (deployment {deployment})"},
                {"status": "success"}]
        if not asked.stream:
            return JSONResponse(done[-1])

        async def lines() -> Any:
            for line in done:
                yield line

        return LineStream(lines(), lambda: None)

    async def delete(request: Request) -> Response:
        asked = parse(DeleteRequest, await read_json(request, _LIMIT))
        api.remove(_deployment_of(api, asked.named))
        return JSONResponse({})

    return [Route("/api/pull", api.guarded(pull), methods=["POST"]),
            Route("/api/delete", api.guarded(delete), methods=["DELETE"])]


def manifest_for(name: str) -> tuple[str, str]:
    """The deployment name and the manifest text for an Ollama name; 400 saying how to declare it otherwise."""
    found = _HF.match(name)
    if found is None:
        raise ApiError(400, f"{name!r} names no source npuctl can read (Ollama's library is not one); {DECLARE}")
    org, repo, tag = found.groups()
    if tag not in (None, LATEST):
        raise ApiError(400, f"{name!r}: the tag {tag!r} names a GGUF quantization of the repository; declare its "
                       f"file in a manifest (spec.model.source: hf:{org}/{repo}/FILE.gguf) and `npuctl apply -f` it")
    deployment = _deployment_name(repo)
    manifest = {"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": deployment},
                "spec": {"model": {"source": f"hf:{org}/{repo}", "task": "text-generation"}}}
    return deployment, f"# written by an Ollama pull of {name}\n" + yaml.safe_dump(manifest, sort_keys=False)


def _deployment_of(api: Manifests, name: str) -> str:
    """The deployment an Ollama name means: a deployment's name, or its `:latest`, or what pull named it."""
    desired = api.declared
    for candidate in (name, name.removesuffix(":" + LATEST)):
        if candidate in desired:
            return candidate
    found = _HF.match(name)
    if found is not None:
        derived = _deployment_name(found.group(2))
        if derived in desired:
            return derived
    raise ApiError(404, f"model {name!r} not found: no manifest of this agent declares it")


def _deployment_name(repo: str) -> str:
    """A DNS label (metadata.name) from a repository's name: `Qwen2.5-0.5B-Instruct` is `qwen2-5-0-5b-instruct`."""
    return re.sub(r"[^a-z0-9-]+", "-", repo.lower()).strip("-")[:63].strip("-") or "model"
