"""The agent's control API under /agent/v1, on the same port as the models. Reads are open to local
clients; every call that changes something needs the bearer token from the state folder.

Applying writes the manifest file into the first watched folder (the file stays the source of
truth: the loop picks it up like a hand edit); deleting removes the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from npuctl.agent.auth import token_matches
from npuctl.agent.files import SAFE_FILE, atomic_write
from npuctl.agent.ollama_models import ollama_model_routes
from npuctl.agent.plan import plan
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.sources import SourcePoller
from npuctl.agent.state_view import AgentState
from npuctl.agent.status import DeploymentStatus
from npuctl.schema import load_text
from npuctl.schema.clashes import clashes
from npuctl.schema.loader import MAX_FILE_BYTES
from npuctl.serve.endpoints import Handler
from npuctl.serve.http.body import read_body
from npuctl.serve.http.errors import ApiError, error_response

PREFIX = "/agent/v1"


def control_routes(reconciler: Reconciler, token: str, guard_reads: bool = False,
                   sources: SourcePoller | None = None) -> list[Route]:
    """The control API. Reads need the token too when `guard_reads` (an agent listening beyond loopback)."""
    api = ControlApi(reconciler, token, sources)
    read = api.guarded if guard_reads else answering
    get, delete = read(api.get), api.guarded(api.delete)

    async def deployment(request: Request) -> Response:
        # One route for both methods: a 405 then names both in its Allow header.
        return await (delete if request.method == "DELETE" else get)(request)

    return [
        Route(f"{PREFIX}/deployments", read(api.list), methods=["GET"]),
        Route(f"{PREFIX}/deployments/{{name}}", deployment, methods=["GET", "DELETE"]),
        Route(f"{PREFIX}/manifests/{{file}}", api.guarded(api.apply), methods=["PUT"]),
        Route(f"{PREFIX}/events", read(api.events), methods=["GET"]),
        Route(f"{PREFIX}/sources", read(api.sources), methods=["GET"]),
        *ollama_model_routes(api),
    ]


def answering(handler: Handler) -> Handler:
    """ApiErrors as JSON error answers, in the same shape as the model APIs' (`{"error": {"message", ...}}`)."""
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc, request.url.path)

    return answer


class ControlApi:
    def __init__(self, reconciler: Reconciler, token: str, sources: SourcePoller | None) -> None:
        self.reconciler = reconciler
        """Asked only to survey a build, and told of a manifest written; read through `state`."""
        self.state = AgentState(reconciler)
        self.token = token
        self.poller = sources

    @property
    def declared(self) -> Mapping[str, object]:
        return self.state.declared

    def guarded(self, handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            if not token_matches(request.headers.get("authorization"), self.token):
                raise ApiError(401, "this call needs the agent's token: Authorization: Bearer <token> "
                               "(npuctl reads it from the agent's state folder or NPUCTL_TOKEN)",
                               headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return answering(checked)

    async def list(self, request: Request) -> Response:
        return JSONResponse({
            "items": [self._view(name) for name in self.state.names()],
            "conditions": [c.model_dump(mode="json") for c in self.state.conditions()],
            "invalidFiles": [p.model_dump(mode="json") for p in self.state.invalid_files()],
            "pendingFiles": [p.model_dump(mode="json") for p in self.state.pending_files()],
            "budget": self.state.budget().model_dump(mode="json"),
        })

    async def get(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.state.declared and self.state.status(name) is None:
            raise ApiError(404, f"no deployment named {name!r}")
        return JSONResponse(self._view(name))

    async def events(self, request: Request) -> Response:
        name = request.query_params.get("name")
        events = [e.model_dump(mode="json") for e in self.state.events(name)]
        return JSONResponse({"items": events})

    async def sources(self, request: Request) -> Response:
        states = self.poller.states.values() if self.poller else []
        return JSONResponse({"items": [state.as_dict() for state in states]})

    async def apply(self, request: Request) -> Response:
        file = request.path_params["file"]
        if not SAFE_FILE.match(file):
            raise ApiError(400, f"{file!r} is not a manifest file name: letters, digits, '.', '_', '-', ending in .yaml or .yml")
        body = await read_body(request, MAX_FILE_BYTES)
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "the manifest is not UTF-8 text") from None
        dry_run = request.query_params.get("dryRun", "").lower() in ("1", "true", "yes")
        return JSONResponse(await self.write(file, text, dry_run))

    async def write(self, file: str, text: str, dry_run: bool) -> dict[str, Any]:
        """Check the manifest `text` as `npuctl apply` does and, unless `dry_run`, write it into the first watched
        folder as `file`: what would change, per deployment."""
        result = load_text(text, file)
        if not result.ok:
            raise ApiError(422, f"{len(result.errors)} error(s) in {file}",
                           details={"errors": [e.as_dict() for e in result.errors]})
        target = self.state.manifest_folder / file
        desired = self.state.declared
        in_file = [n for n, d in desired.items() if d.deployment.file.resolve() == target.resolve()]
        for loaded in result.deployments:
            other = desired.get(loaded.name)
            if other and other.deployment.file.resolve() != target.resolve():
                raise ApiError(409, f"deployment {loaded.name!r} is already declared in {other.deployment.file}; "
                                    "apply that file instead, or delete it first")
        elsewhere = [d.deployment for d in desired.values()
                     if d.deployment.file.resolve() != target.resolve() and d.conflict is None]
        for clash in clashes([*elsewhere, *result.deployments]):
            raise ApiError(409, f"{file}: {clash.message}; choose another spec.serve.name or alias")
        changes = [c.as_dict() for c in plan(result.deployments, in_file, desired)]
        for change, loaded in zip(changes, result.deployments):
            if change["effect"] == "build":
                steps = await run_in_threadpool(self.reconciler.survey, loaded, target.parent)
                change["steps"] = steps.model_dump(mode="json", exclude_unset=True)
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, text.encode("utf-8"))
            self.reconciler.wrote(target)
        return {"file": str(target), "dryRun": dry_run, "changes": changes}

    async def delete(self, request: Request) -> Response:
        return JSONResponse(self.remove(request.path_params["name"]))

    def remove(self, name: str) -> dict[str, Any]:
        """Delete the manifest file that declares deployment `name` (409 when it declares others too)."""
        want = self.state.declared.get(name)
        if want is None:
            raise ApiError(404, f"no deployment named {name!r}")
        file: Path = want.deployment.file
        others = [n for n, d in self.state.declared.items() if n != name and d.deployment.file == file]
        if others:
            raise ApiError(409, f"{file} also declares {', '.join(others)}; edit that file to remove {name!r}")
        file.unlink(missing_ok=True)
        self.reconciler.wake()
        return {"deleted": name, "file": str(file)}

    def _view(self, name: str) -> dict[str, Any]:
        want = self.state.declared.get(name)
        view: dict[str, Any] = want.deployment.deployment.model_dump(mode="json") if want else {"metadata": {"name": name}}
        status = self.state.status(name)
        view["status"] = (status or DeploymentStatus(name=name)).model_dump(mode="json")
        return view
