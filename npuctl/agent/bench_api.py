"""The control API's part for `npuctl bench`: the agent's process figures while a bench runs (`GET
/agent/v1/process`), and the bench's result kept in the deployment's status (`PUT
/agent/v1/deployments/{name}/bench`, with the token). The CLI runs the load, as a client would; only the agent
can read its own CPU time and memory, and only the agent keeps status."""

from __future__ import annotations

import asyncio
import platform
from importlib import metadata

import psutil
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from npuctl import __version__
from npuctl.agent.api import PREFIX, answering
from npuctl.agent.auth import token_matches
from npuctl.agent.reconcile import Reconciler
from npuctl.runtime.devices import HostFacts
from npuctl.schema.bench import BenchResult, HostFigures
from npuctl.serve.http.body import read_body
from npuctl.serve.http.errors import ApiError

MAX_RESULT_BYTES = 256 * 1024
"""A bench result is a few KB; the body is refused past this while it streams in."""
VERSIONED = ("onnxruntime", "onnxruntime-qnn", "onnxruntime-genai")


def bench_routes(reconciler: Reconciler, host: HostFacts, token: str, guard_reads: bool) -> list[Route]:
    process = psutil.Process()

    async def figures(request: Request) -> Response:
        if guard_reads:
            _check(request, token)
        times = process.cpu_times()
        memory = process.memory_info()
        # Windows keeps the peak working set; elsewhere the bench samples the resident size.
        peak = getattr(memory, "peak_wset", None)
        return JSONResponse({"pid": process.pid, "cpuSeconds": times.user + times.system, "rssBytes": memory.rss,
                             "peakRssBytes": peak,
                             "eventLoop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                             "host": host_figures(host).model_dump(mode="json")})

    async def keep(request: Request) -> Response:
        _check(request, token)
        name = request.path_params["name"]
        status = reconciler.book.deployments.get(name)
        if status is None or name not in reconciler.desired:
            raise ApiError(404, f"no deployment named {name!r}")
        try:
            result = BenchResult.model_validate_json(await read_body(request, MAX_RESULT_BYTES))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "body"
            raise ApiError(422, f"not a bench result: {where}: {first['msg']} (send what `npuctl bench -o json` "
                                "prints)") from None
        status.last_bench = result
        reconciler.book.record(name, "Benched", f"{result.model}: bench of {result.seconds:.0f} s kept in status")
        reconciler.book.save()
        return JSONResponse({"name": name, "time": result.time})

    return [
        Route(f"{PREFIX}/process", answering(figures), methods=["GET"]),
        Route(f"{PREFIX}/deployments/{{name}}/bench", answering(keep), methods=["PUT"]),
    ]


def host_figures(host: HostFacts) -> HostFigures:
    versions = {"npuctl": __version__, "python": platform.python_version()}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    soc = f"{host.soc_name} (soc {host.soc_model})" if host.soc_model else None
    return HostFigures(soc=soc, os=f"{host.os} {host.os_version}", arch=host.arch, npu=host.npu.value,
                       versions=versions)


def _check(request: Request, token: str) -> None:
    if not token_matches(request.headers.get("authorization"), token):
        raise ApiError(401, "this call needs the agent's token: Authorization: Bearer <token> "
                            "(npuctl reads it from the agent's state folder or NPUCTL_TOKEN)",
                       headers={"WWW-Authenticate": "Bearer"})
